"""Lists without end: a service whose every list answers ``has_more: true`` with the same page
whatever the cursor (the official OpenAPI spec served by a static mock does this). ``status``,
``watch`` and ``cleanup`` of a run still return, after a bounded number of requests, and say that a
listing stopped early."""

from __future__ import annotations

from tests.openai.test_cli_e2e import Session, _doc, session  # noqa: F401 - the fixture is used by name

# generous: one status is a handful of gets plus at most MAX_*_PAGES pages of each list
REQUEST_BUDGET = 150


def _requests(session: Session) -> int:  # noqa: F811
    return int(session.state()["requests"])


def test_status_and_cleanup_return_when_every_list_says_has_more(session: Session) -> None:  # noqa: F811
    made = session.run("--no-deploy")
    assert made.returncode == 0, made.stderr
    run_id = _doc(made)["run_id"]
    session.control("/_emulator/openai/settings", {"lists_never_end": True})
    for args in (("status", run_id, "--json"), ("status", run_id), ("watch", run_id, "--json")):
        before = _requests(session)
        shown = session(*args, timeout=60)
        assert shown.returncode == 0, (args, shown.stderr)
        assert _requests(session) - before <= REQUEST_BUDGET, args
        assert "stopped listing" in shown.stderr, (args, shown.stderr)
    assert _doc(session("status", run_id, "--json"))["status"] == "succeeded"
    before = _requests(session)
    cleaned = session("cleanup", run_id, "--json", timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert _requests(session) - before <= REQUEST_BUDGET
    assert session.state()["models"] == 0  # the cleanup still did its work


def test_a_run_finds_its_own_job_again_when_lists_never_end(session: Session) -> None:  # noqa: F811
    """Resume after the job-creation answer was lost: the search for the run's job is bounded too."""
    session.control("/_emulator/openai/settings", {"lists_never_end": True})
    session.faults({"route": "POST /v1/fine_tuning/jobs", "kind": "drop", "after": True})
    made = session.run("--no-deploy", timeout=120)
    assert made.returncode == 0, made.stderr
    assert len(session.state()["job_ids"]) == 1  # found by its tag, never created twice
