"""Issue 9's smaller defects through the CLI against ``cloudtune emulate openai``: deleting a model
that does not exist is a not-found error (exit 2), and ``-o`` values YAML cannot read are text."""

from __future__ import annotations

import json

from tests.openai.test_cli_e2e import Session, _doc, session  # noqa: F401 - the fixture is used by name


def test_delete_model_of_a_missing_id_is_not_found_exit_2(session: Session) -> None:  # noqa: F811
    made = session.run("--no-deploy")
    assert made.returncode == 0, made.stderr
    model = _doc(made)["fine_tuned_model"]
    typo = model[:-1] + ("x" if model[-1] != "x" else "y")
    missing = session("delete-model", typo, "--provider", "openai")
    assert missing.returncode == 2, missing.stderr
    assert "no model" in missing.stderr and typo in missing.stderr and "deleted" not in missing.stdout
    assert session.state()["models"] == 1  # nothing was deleted
    deleted = session("delete-model", model, "--provider", "openai")
    assert deleted.returncode == 0, deleted.stderr
    assert session.state()["models"] == 0
    again = session("delete-model", model, "--provider", "openai", "--json")
    assert again.returncode == 2  # gone now: deleting it again is not a silent success either


def test_an_option_value_yaml_cannot_read_is_kept_as_text(session: Session) -> None:  # noqa: F811
    result = session.run("--no-deploy", "-o", "organization=@acme")
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr


def test_cleanup_cancel_of_a_timed_out_run_lists_it_cancelled(session: Session) -> None:  # noqa: F811
    session.control("/_emulator/openai/settings", {"run_s": 3600.0})  # a job that outlasts --timeout
    timed_out = session.run("--timeout", "2s", "--no-deploy")
    assert timed_out.returncode == 5, timed_out.stderr
    run_id = _doc(timed_out)["run_id"]
    cleaned = session("cleanup", run_id, "--cancel", "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert list(session.state()["job_statuses"].values()) == ["cancelled"]  # the service's own record
    listed = [row for row in json.loads(session("list", "--json").stdout)["runs"] if row["run_id"] == run_id]
    assert listed and listed[0]["status"] == "cancelled", listed
