"""Issue 16 point 3: ``kill -9`` inside ``cloudtune cleanup``, after the service deleted the model
and before the answer came back. ``resume`` must not say ``succeeded`` for a model the service
no longer has; the ledger must say what the service says."""

from __future__ import annotations

import json
import signal
import time

from tests.openai.test_cli_e2e import Session, _doc, session  # noqa: F401 - the emulator fixture


def test_kill_9_after_the_model_delete_was_sent_then_resume(session: Session) -> None:
    result = session.run("--no-deploy", "--cleanup", "never")
    assert result.returncode == 0, result.stderr
    run_id, model = _doc(result)["run_id"], _doc(result)["fine_tuned_model"]
    session.faults({"route": "DELETE /v1/models/", "kind": "latency", "latency_s": 60, "after": True})
    cleanup = session.start("cleanup", run_id, "--json")
    deadline = time.monotonic() + 60
    while model in session.state()["model_ids"]:  # the service deletes it; the answer is held back
        assert cleanup.poll() is None and time.monotonic() < deadline, cleanup.communicate()
        time.sleep(0.1)
    cleanup.send_signal(signal.SIGKILL)
    cleanup.communicate()
    session.control("/_emulator/faults", [])
    resumed = session("resume", run_id, "--json")
    assert resumed.returncode != 0, resumed.stdout
    assert _doc(resumed).get("status") != "succeeded"
    assert "deleted" in json.dumps(_doc(resumed)), resumed.stdout
    status = _doc(session("status", run_id, "--json", "--offline"))
    states = {r["id"]: r["state"] for r in status["resources"] if r["kind"] == "model"}
    assert states == {model: "deleted"}, states
    assert model not in session.state()["model_ids"]
