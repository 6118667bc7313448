"""Issue 16 points 5, 6 and 10 through the CLI against ``cloudtune emulate openai``, judged from
the emulator's records: a rebuild checks that the model still exists; ``delete-model MODEL``
records the delete in the run that made the model, under its lock; several jobs tagged with one
run are listed, never guessed between, and all cleaned up; a sweep asks for the job's state and
``status`` writes down what it saw."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from cloudtune.locks import RunLock
from tests.openai.test_cli_e2e import KEY, Session, _doc, session  # noqa: F401 - the emulator fixture

SPEC = ("--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl", "--no-deploy")


def _fresh(session: Session, name: str = "fresh") -> dict[str, str]:
    return {"CLOUDTUNE_HOME": str(session.tmp / name)}


def _models_in_ledger(status: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["state"] for r in status["resources"] if r["kind"] == "model"}


def _wait_all_jobs_done(session: Session) -> None:
    deadline = time.monotonic() + 60
    while any(s not in ("succeeded", "failed", "cancelled") for s in session.state()["job_statuses"].values()):
        assert time.monotonic() < deadline, session.state()["job_statuses"]
        time.sleep(0.1)


def test_a_rebuild_after_cleanup_does_not_adopt_the_deleted_model(session: Session) -> None:
    made = _doc(session.run("--no-deploy", "--cleanup", "never"))
    run_id, model = made["run_id"], made["fine_tuned_model"]
    assert session("cleanup", run_id, "--json").returncode == 0
    assert model not in session.state()["model_ids"]
    resumed = session("resume", run_id, *SPEC, "--json", **_fresh(session))
    assert resumed.returncode != 0, resumed.stdout
    assert "succeeded" != _doc(resumed).get("status") and "deleted" in resumed.stdout + resumed.stderr
    status = _doc(session("status", run_id, "--offline", "--json", **_fresh(session)))
    assert _models_in_ledger(status) == {model: "deleted"}


def test_delete_model_by_id_takes_the_runs_lock_and_records_the_delete(session: Session,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    made = _doc(session.run("--no-deploy", "--cleanup", "never"))
    run_id, model = made["run_id"], made["fine_tuned_model"]
    monkeypatch.setenv("CLOUDTUNE_HOME", str(session.tmp / "home"))
    with RunLock(run_id):  # another process drives the run
        locked = session("delete-model", model, "--provider", "openai", "--json")
        assert locked.returncode == 6, locked.stdout + locked.stderr
        assert model in session.state()["model_ids"]
    deleted = session("delete-model", model, "--provider", "openai", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert _doc(deleted)["run_id"] == run_id and f"model:{model}" in _doc(deleted)["deleted"]
    assert model not in session.state()["model_ids"]
    status = _doc(session("status", run_id, "--offline", "--json"))
    assert _models_in_ledger(status) == {model: "deleted"}
    assert [c["reason"] for c in status["cleanups"]] == ["cloudtune delete-model"]
    resumed = session("resume", run_id, "--json")
    assert resumed.returncode != 0 and _doc(resumed).get("status") != "succeeded"


def test_several_jobs_tagged_with_one_run_are_listed_and_all_cleaned_up(session: Session) -> None:
    made = _doc(session.run("--no-deploy", "--cleanup", "never"))
    run_id = made["run_id"]
    # another runner (or another tool) made a second job carrying the same run tag
    client = openai.OpenAI(api_key=KEY, base_url=session.url + "/v1", max_retries=0)
    other = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=made["training_file_id"],
                                           metadata={"cloudtune_run_id": run_id})
    _wait_all_jobs_done(session)
    assert session.state()["models"] == 2
    refused = session("resume", run_id, *SPEC, "--json", **_fresh(session))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = _doc(refused)["error"]["message"]
    assert made["job_id"] in message and other.id in message and "will not guess" in message
    assert session.state()["jobs"] == 2  # nothing was created
    cleaned = session("cleanup", run_id, "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    state = session.state()
    assert state["models"] == 0 and state["files_by_purpose"].get("fine-tune", 0) == 0


def test_a_sweep_asks_for_the_jobs_state_and_status_records_it(session: Session) -> None:
    first = _doc(session.run("--no-wait", "--no-deploy", "--cleanup", "never"))
    second = _doc(session.run("--no-wait", "--no-deploy", "--cleanup", "never"))
    assert first["state"] != "succeeded" and second["state"] != "succeeded"
    _wait_all_jobs_done(session)
    # status sees the job's end and writes it down
    assert session("status", second["run_id"], "--json").returncode == 0
    recorded = _doc(session("status", second["run_id"], "--offline", "--json"))
    assert recorded["state"] == "succeeded" and list(_models_in_ledger(recorded).values()) == ["owned"]
    # the sweep does not act on the stale "validating" of the first run: it asks
    swept = session("cleanup", "--older-than", "0s", "--json")
    assert swept.returncode == 0, swept.stderr
    results = {r["run_id"]: r for r in _doc(swept)["runs"]}
    assert not results[first["run_id"]].get("skipped"), results
    assert session.state()["models"] == 0


def test_watch_records_the_end_it_saw_unless_another_process_drives_the_run(session: Session,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = _doc(session.run("--no-wait", "--no-deploy", "--cleanup", "never"))
    second = _doc(session.run("--no-wait", "--no-deploy", "--cleanup", "never"))
    monkeypatch.setenv("CLOUDTUNE_HOME", str(session.tmp / "home"))
    with RunLock(second["run_id"]):  # another process drives the second run: watch only reads it
        assert session("watch", second["run_id"], "--json").returncode == 0
        assert session("watch", first["run_id"], "--json").returncode == 0
    assert _doc(session("status", first["run_id"], "--offline", "--json"))["state"] == "succeeded"
    assert _doc(session("status", second["run_id"], "--offline", "--json"))["state"] != "succeeded"
