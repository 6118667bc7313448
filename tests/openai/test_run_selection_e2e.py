"""Issue 16 points 1 and 2: which runs a cleanup touches. Judged from the emulator's records:
a refused selector deletes nothing anywhere."""

from __future__ import annotations

from tests.openai.test_cli_e2e import Session, _doc, session  # noqa: F401 - the emulator fixture


def _two_finished_runs(session: Session) -> tuple[str, str]:
    ids = []
    for _ in range(2):
        result = session.run("--no-deploy", "--cleanup", "never")
        assert result.returncode == 0, result.stderr
        ids.append(_doc(result)["run_id"])
    assert session.state()["models"] == 2
    return ids[0], ids[1]


def test_cleanup_of_a_run_with_older_than_is_refused_and_deletes_nothing(session: Session) -> None:
    first, second = _two_finished_runs(session)
    files = session.state()["files_by_purpose"]["fine-tune"]
    for age in ("0s", "100d"):  # older than D (every run would go) and younger (nothing would)
        refused = session("cleanup", first, "--older-than", age)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "not both" in refused.stderr and "Nothing was deleted" in refused.stderr
    state = session.state()
    assert state["models"] == 2 and state["files_by_purpose"]["fine-tune"] == files
    help_text = session("cleanup", "--help").stdout
    assert "refused together with a run id" in help_text
