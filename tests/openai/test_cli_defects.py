"""Issue 9's smaller defects through the CLI against ``cloudtune emulate openai``: deleting a model
that does not exist is a not-found error (exit 2), and ``-o`` values YAML cannot read are text."""

from __future__ import annotations

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
