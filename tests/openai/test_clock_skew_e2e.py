"""Issue 16 point 7: one clock-skew allowance for every search. A runner whose clock is a few
minutes fast (here: the emulator's clock is set four minutes back) is killed after the job was
created but before it heard so; ``resume`` must find that job, not create a second one."""

from __future__ import annotations

import signal
import time

from tests.openai.test_cli_e2e import Session, _doc, session  # noqa: F401 - the emulator fixture

RUNNER_AHEAD_S = 240.0  # within the allowance (15 minutes), beyond the old minute


def test_a_runner_with_a_fast_clock_resumes_into_its_one_job(session: Session) -> None:
    session.control("/_emulator/advance", {"seconds": -RUNNER_AHEAD_S})
    session.faults({"route": "POST /v1/fine_tuning/jobs$", "kind": "latency", "latency_s": 60, "after": True})
    process = session.start_run("--no-deploy", "--cleanup", "never")
    deadline = time.monotonic() + 60
    while session.state()["jobs"] == 0:  # the job exists; its answer is held back
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    session.control("/_emulator/faults", [])
    listed = session("list", "--json")
    run_id = _doc(listed)["runs"][0]["run_id"]
    resumed = session("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    state = session.state()
    assert state["jobs"] == 1, f"resume made a second job: {state['job_ids']}"
    assert _doc(resumed)["job_id"] == state["job_ids"][0]
    assert state["files_by_purpose"]["fine-tune"] == 1  # and no second upload either
