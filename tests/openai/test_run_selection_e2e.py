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


def test_a_run_selector_is_an_exact_id_or_a_unique_prefix(session: Session) -> None:
    first, second = _two_finished_runs(session)
    files = session.state()["files_by_purpose"]["fine-tune"]
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)  # where the two ids part
    for selector in ("", " ", "%", "_", "-", first[:7], first[-6:], first[:max(shared, 8)]):
        if len(selector) >= 8 and not second.startswith(selector):
            continue  # not ambiguous after all (the two runs started in different seconds)
        refused = session("cleanup", selector, "--json")
        assert refused.returncode == 2, (selector, refused.stdout, refused.stderr)
        message = _doc(refused)["error"]["message"]
        assert "candidates" in message and (first in message or second in message), (selector, message)
        assert session.state()["models"] == 2 and session.state()["files_by_purpose"]["fine-tune"] == files
    # the same with the status and resume commands: no run is picked for an empty selector
    for command in ("status", "resume"):
        refused = session(command, "", "--json")
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
    unique = first[: max(shared + 1, 8)]
    assert not second.startswith(unique)
    cleaned = session("cleanup", unique, "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert _doc(cleaned)["run_id"] == first
    state = session.state()
    assert state["models"] == 1 and state["files_by_purpose"]["fine-tune"] == files - 1
