"""``cloudtune`` as a subprocess against ``cloudtune emulate openai`` in another process: the
whole pipeline over real HTTP through the openai SDK, with faults injected over the wire."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_zygote import Process, run_cloudtune, start_cloudtune
from tests.support.emulators import EmulatorProcess, control
from tests.support.testenv import env_without
from tests.openai.conftest import DOCUMENTED_DAY, write_training_file

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-e2e-emulator-key-555"


@dataclass
class Session:
    tmp: Path
    url: str  # http://127.0.0.1:PORT

    def env(self, **extra: str) -> dict[str, str]:
        env = env_without("CLOUDTUNE_", "OPENAI_")
        env.update(
            CLOUDTUNE_HOME=str(self.tmp / "home"), OPENAI_API_KEY=KEY, OPENAI_BASE_URL=self.url + "/v1",
            CLOUDTUNE_POLL_INTERVAL="0.2", CLOUDTUNE_POLL_MAX="0.5", PYTHONPATH=str(ROOT), CI="1",
            CLOUDTUNE_TODAY=DOCUMENTED_DAY,
        )
        env.update(extra)
        return env

    def __call__(self, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cloudtune(list(args), self.tmp, self.env(**env), timeout)

    def start(self, *args: str) -> Process:
        return start_cloudtune(list(args), self.tmp, self.env())

    def run(self, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl", "--json",
                    *extra, **env)

    def start_run(self, *extra: str) -> Process:
        return self.start("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl", "--json",
                          *extra)

    def control(self, path: str, body: Any = None) -> Any:
        return control(self.url, path, body)

    def state(self) -> dict[str, Any]:
        return self.control("/_emulator/state")

    def faults(self, *faults: dict[str, Any]) -> None:
        self.control("/_emulator/faults", list(faults))

    def wait_for_job_status(self, process: Process, wanted: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = self.state()["job_statuses"]
            for job_id, status in statuses.items():
                if status == wanted:
                    return job_id
            if process.poll() is not None:
                raise AssertionError(f"run ended early: {process.communicate()}")
            time.sleep(0.1)
        process.kill()
        raise AssertionError(f"no job reached {wanted}")


def _doc(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("{")]
    assert lines, (result.returncode, result.stdout, result.stderr)
    return json.loads(lines[-1])


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    write_training_file(tmp_path / "train.jsonl", 12)
    with EmulatorProcess("openai", "--port", "0", "--job-duration", "1.5", "--api-key", KEY, cwd=tmp_path) as emulator:
        yield Session(tmp_path, emulator.url)


def test_run_deploys_and_smoke_tests_then_cleanup_leaves_nothing(session: Session) -> None:
    result = session.run()
    assert result.returncode == 0, result.stderr
    doc = _doc(result)
    assert doc["status"] == "succeeded" and doc["state"] == "succeeded"
    assert doc["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:") and doc["deployment"]
    assert doc["smoke_test"]
    state = session.state()
    assert state["jobs"] == 1 and state["models"] == 1 and state["chat_requests"] == 1
    cleaned = session("cleanup", doc["run_id"], "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    state = session.state()
    assert state["models"] == 0 and state["files_by_purpose"].get("fine-tune", 0) == 0
    assert KEY not in result.stdout + result.stderr + cleaned.stdout + cleaned.stderr


def test_rate_limit_bursts_are_waited_out(session: Session) -> None:
    session.faults(
        {"route": "POST /v1/files$", "status": 429, "retry_after": 0.2, "times": 2},
        {"route": "GET /v1/fine_tuning/jobs/", "status": 429, "retry_after": 0.2, "times": 5},
        {"route": "GET /v1/models/", "status": 429, "retry_after": 0.2, "times": 2},
        {"route": "POST /v1/chat/completions$", "status": 429, "retry_after": 0.2, "times": 2},
    )
    result = session.run()
    assert result.returncode == 0, result.stderr
    assert _doc(result)["status"] == "succeeded"
    hits = session.control("/_emulator/faults")["hits"]
    assert len(hits) == 11
    state = session.state()
    assert state["jobs"] == 1 and state["files_by_purpose"]["fine-tune"] == 1


@pytest.mark.parametrize("after", [True, False], ids=["job-made-answer-lost", "job-not-made"])
def test_server_error_on_create_still_makes_exactly_one_job(session: Session, after: bool) -> None:
    session.faults({"route": "POST /v1/fine_tuning/jobs$", "status": 500, "after": after})
    result = session.run()
    assert result.returncode == 0, result.stderr
    assert session.state()["jobs"] == 1
    assert _doc(result)["status"] == "succeeded"


def test_connection_reset_during_upload_is_retried(session: Session) -> None:
    session.faults({"route": "POST /v1/files$", "kind": "drop"})
    result = session.run()
    assert result.returncode == 0, result.stderr
    assert session.state()["files_by_purpose"]["fine-tune"] == 1
    assert any(hit.startswith("drop:POST /v1/files") for hit in session.control("/_emulator/faults")["hits"])


def test_job_failing_validation_exits_1_with_the_line(session: Session) -> None:
    # data our local checks accept but the service refuses (its rules can be stricter than ours)
    message = "The job failed due to an invalid training file. Invalid file format. Line 7, message 2: unexpected key."
    session.faults({"kind": "fail_job", "stage": "validating_files", "code": "invalid_training_file",
                    "message": message})
    result = session.run()
    assert result.returncode == 1, result.stderr
    doc = _doc(result)
    assert doc["status"] == "failed" and doc["state"] == "failed"
    shown = json.dumps(doc) + result.stderr
    assert "Line 7" in shown and "invalid_training_file" in shown


def test_uploads_api_path_above_a_small_threshold(session: Session) -> None:
    result = session.run("-o", "upload_threshold_bytes=1500", "-o", "upload_part_bytes=1000")
    assert result.returncode == 0, result.stderr
    state = session.state()
    assert list(state["upload_statuses"].values()) == ["completed"]
    assert state["files_by_purpose"]["fine-tune"] == 1


def test_cancel_mid_run(session: Session) -> None:
    session.control("/_emulator/openai/settings", {"run_s": 20})
    process = session.start_run()
    session.wait_for_job_status(process, "running")
    run_id = _doc(session("list", "--json"))["runs"][0]["run_id"]
    cancelled = session("cancel", run_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "cancelled"
    assert list(session.state()["job_statuses"].values()) == ["cancelled"]


def test_sigterm_mid_wait_then_resume_finishes_the_one_job(session: Session) -> None:
    session.control("/_emulator/openai/settings", {"run_s": 3})
    process = session.start_run()
    session.wait_for_job_status(process, "running")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["status"] == "interrupted" and doc["job_id"]
    resumed = session("resume", doc["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    final = _doc(resumed)
    assert final["status"] == "succeeded" and final["job_id"] == doc["job_id"]
    assert session.state()["jobs"] == 1


def test_wrong_key_exits_3_and_says_what_to_check(session: Session) -> None:
    result = session.run(OPENAI_API_KEY="sk-definitely-wrong-000")
    assert result.returncode == 3, result.stderr
    assert "OPENAI_API_KEY" in result.stderr and "definitely-wrong" not in result.stdout + result.stderr


def test_pause_then_resume_continues_the_same_job(session: Session) -> None:
    # long enough to be paused mid-run (uploads no longer wait for "processed", so nothing else delays it)
    session.control("/_emulator/openai/settings", {"run_s": 20})
    created = session.run("--no-wait", "--no-deploy")
    assert created.returncode == 0, created.stderr
    doc = _doc(created)
    # OpenAI pauses only a running job (a validating one is refused with a 400), and a fast CLI can
    # ask before the emulator has finished validating the files: wait until the service says running
    deadline = time.monotonic() + 30
    while session.state()["job_statuses"][doc["job_id"]] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    paused = session("pause", doc["run_id"], "--json")
    assert paused.returncode == 0, paused.stderr
    assert _doc(paused)["state"] == "paused"
    assert session.state()["job_statuses"][doc["job_id"]] == "paused"
    resumed = session("resume", doc["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    final = _doc(resumed)
    assert final["status"] == "succeeded" and final["job_id"] == doc["job_id"]
    assert session.state()["jobs"] == 1


def test_one_file_with_a_bom_validates_with_a_note_and_runs_on_openai(session: Session) -> None:
    train = session.tmp / "train.jsonl"
    original = b"\xef\xbb\xbf" + train.read_bytes()  # saved as "UTF-8 with BOM", as Azure documents
    train.write_bytes(original)
    checked = session("validate", "train.jsonl", "--provider", "openai")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "note [bom_adjusted]" in checked.stdout and "without it" in checked.stdout
    result = session.run("--no-deploy")  # the emulator marks a file with a BOM "error", as OpenAI does
    assert result.returncode == 0, result.stderr[-3000:]
    assert _doc(result)["status"] == "succeeded"
    assert train.read_bytes() == original  # the user's file is never modified


def test_the_estimate_is_printed_before_upload_and_max_cost_refuses_with_exit_4(session: Session) -> None:
    refused = session("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl",
                      "--max-cost", "0.00001")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    output = refused.stdout + refused.stderr
    assert "ESTIMATE" in output and "billed training tokens" in output and "price as of" in output
    assert "above --max-cost" in output and "Nothing was uploaded" in output
    assert session.state()["files"] == 0 and session.state()["jobs"] == 0
    ran = session("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl",
                  "--max-cost", "50", "--no-deploy")
    assert ran.returncode == 0, ran.stderr[-3000:]
    printed = ran.stdout + ran.stderr
    assert "stops serving on 2027-01-14" in printed and "ESTIMATE" in printed


def test_a_shut_down_base_is_refused_with_exit_4_before_upload(session: Session) -> None:
    result = session("run", "--provider", "openai", "--model", "gpt-4.1-nano", "--train", "train.jsonl")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "2026-10-23" in result.stderr and "--provider azure --model gpt-4.1-nano-2025-04-14" in result.stderr
    assert session.state()["files"] == 0
