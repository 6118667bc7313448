"""``cloudtune run --method reinforcement`` as a subprocess against ``cloudtune emulate azure`` (issue 19
point 7): the whole pipeline on o4-mini, ``--max-cost`` in hours, and a job paused at the $5,000 cap as a
clear, resumable state."""

from __future__ import annotations

import json
from pathlib import Path

from tests.azure.test_cli_e2e import Cli, Emulator, _json, emulator  # noqa: F401 - fixture used by name

GRADER = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
          "reference": "{{ item.solution }}", "operation": "eq"}


def _cli(emulator: Emulator, tmp_path: Path) -> tuple[Cli, list[str]]:  # noqa: F811
    data = tmp_path / "rft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{i} + {i} = ?"}],
                                        "solution": str(2 * i)}) + "\n" for i in range(20)))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    args = ["run", "--provider", "azure", "--model", "o4-mini", "--method", "reinforcement", "--grader", str(grader),
            "--train", str(data), "--validation-split", "0.25", "--no-deploy", "--json"]
    return Cli(emulator, tmp_path / "home", data), args


def test_an_rft_run_end_to_end_and_max_cost_in_hours(emulator: Emulator, tmp_path: Path) -> None:  # noqa: F811
    cli, args = _cli(emulator, tmp_path)
    files = emulator.state()["files"]
    refused = cli(*args, "--max-cost", "300")
    assert refused.returncode == 4, (refused.stdout[-2000:], refused.stderr[-2000:])
    assert "3.00 training hours" in refused.stdout + refused.stderr
    assert emulator.state()["files"] == files  # nothing was uploaded
    done = cli(*args, "--max-cost", "5000", timeout=300)
    run = _json(done)
    assert done.returncode == 0 and run["status"] == "succeeded", (done.stdout[-2000:], done.stderr[-2000:])
    assert run["fine_tuned_model"].startswith("o4-mini-2025-04-16.ft-")


def test_a_job_paused_at_the_billing_cap_stops_the_wait_and_resumes(emulator: Emulator, tmp_path: Path) -> None:  # noqa: F811
    cli, args = _cli(emulator, tmp_path)
    emulator.configure(timeline={"rft_hour_s": 0.05})  # 50 billed hours come 2.5 emulated seconds into training
    try:
        paused = cli(*args, timeout=300)
    finally:
        emulator.configure(timeline={"rft_hour_s": 0.0})
    run = _json(paused)
    assert paused.returncode == 5, (paused.stdout[-2000:], paused.stderr[-2000:])
    said = paused.stdout + paused.stderr
    assert "$5,000" in said and "cloudtune resume" in said and "checkpoint" in said
    resumed = cli("resume", run["run_id"], "--json", timeout=300)
    assert resumed.returncode == 0, (resumed.stdout[-2000:], resumed.stderr[-2000:])
    assert _json(resumed)["status"] == "succeeded"
