"""Types, state machine, errors, registry, ledger, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune import errors, registry
from cloudtune.config import parse_duration
from cloudtune.ledger import Ledger
from cloudtune.types import JOB_TRANSITIONS, TERMINAL_STATES, FineTuneSpec, Hyperparameters, JobState, can_transition

ROOT = Path(__file__).resolve().parents[2]


def test_terminal_states_are_final_and_unknown_is_not_a_trap() -> None:
    for state in TERMINAL_STATES:
        assert JOB_TRANSITIONS[state] == frozenset()
        assert not can_transition(state, JobState.RUNNING)
    for state in JobState:
        if state not in TERMINAL_STATES:
            assert can_transition(state, JobState.UNKNOWN)
            assert can_transition(JobState.UNKNOWN, state)
    assert not can_transition(JobState.RUNNING, JobState.VALIDATING)


def test_every_error_has_the_documented_exit_code() -> None:
    expected = {
        errors.JobFailed: 1, errors.ProviderError: 1, errors.InvalidInput: 2, errors.DatasetError: 2,
        errors.ConfigError: 2, errors.AuthError: 3, errors.QuotaExceeded: 4, errors.RegionUnavailable: 4,
        errors.UnsupportedOperation: 4, errors.WaitTimeout: 5, errors.Interrupted: 130,
    }
    for cls, code in expected.items():
        assert errors.exit_code_for(cls("x")) == code, cls
    assert errors.exit_code_for(KeyboardInterrupt()) == 130
    assert isinstance(errors.NotFound("x"), LookupError)
    assert isinstance(errors.WaitTimeout("x"), TimeoutError)
    doc = errors.errors.__doc__ if hasattr(errors, "errors") else errors.__doc__
    for cls in expected:
        assert cls.__name__ in doc  # the tree in the docstring names every class


def test_hyperparameters_auto_means_provider_default() -> None:
    assert Hyperparameters(epochs="auto", batch_size="auto").epochs is None
    with pytest.raises(ValueError):
        FineTuneSpec(provider="x", base_model="m", training_file="t", validation_file="v", validation_split=0.1)


def test_registry_unknown_name_lists_valid_ones_and_default_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ProviderUnavailable) as caught:
        registry.resolve("nope")
    assert "azure, local, openai" in str(caught.value)
    monkeypatch.setenv("CLOUDTUNE_PROVIDER", "openai")
    assert registry.resolve(None).name == "openai"
    assert registry.resolve("tests.support.memory_provider:MemoryProvider").target.endswith("MemoryProvider")
    assert registry.BUILTIN_PROVIDERS["local"].install_hint == "pip install 'cloudtune[local]'"


def test_missing_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ProviderUnavailable) as caught:
        registry.provider_class("no_such_module_anywhere:Provider")
    assert caught.value.exit_code == 2


def test_ledger_intents_without_results_are_pending(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    spec = FineTuneSpec(provider="p", base_model="m", training_file="t", provider_options={"api_key": "sk-abcdefghijkl"})
    run = ledger.create_run(spec)
    first = ledger.intent(run.run_id, "upload_file", path="t")
    ledger.result(run.run_id, "upload_file", first, value="file-1")
    second = ledger.intent(run.run_id, "create_job")
    assert [r.id for r in ledger.pending_intents(run.run_id)] == [second]
    assert ledger.get_run(run.run_id[:8]).run_id == run.run_id  # a unique prefix of 8+ characters is enough
    for too_loose in (run.run_id[-6:], run.run_id[:7], "", "%", "_", "-"):  # issue 16 point 2: never widened
        with pytest.raises(errors.InvalidInput, match="candidates"):
            ledger.get_run(too_loose)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("l.db*"))  # the WAL holds the fresh pages
    assert b"file-1" in stored  # the check can fail: what was written is in these bytes
    assert b"sk-abcdefghijkl" not in stored
    assert ledger._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(errors.InvalidInput):
        ledger.get_run("no-such-run")


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45 and parse_duration("24h") == 86400
    with pytest.raises(errors.ConfigError):
        parse_duration("soon")


def test_help_imports_no_sdk_torch_or_pydantic() -> None:
    code = (
        "import sys; from cloudtune.cli import build_parser; build_parser().format_help(); "
        "heavy = [m for m in ('torch','transformers','openai','azure','pydantic','rich','yaml') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    help_out = subprocess.run([sys.executable, "-m", "cloudtune", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_out.returncode == 0 and "exit codes" in help_out.stdout


def test_entry_point_plugins_are_found_and_cannot_shadow_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "cloudtune_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudtune-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[cloudtune.providers]\nmemory = tests.support.memory_provider:MemoryProvider\n"
        "openai = somewhere.else:Impostor\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = registry.known_providers()
    assert found["memory"].target == "tests.support.memory_provider:MemoryProvider"
    assert found["openai"].target == "providers.openai:OpenAIProvider"
    provider = registry.get_provider("memory")
    assert provider.name == "memory"


def test_redaction_keeps_pointers_to_secrets() -> None:
    from cloudtune.secrets import redact

    kept = redact({"credential": "cli", "api_key_env": "MY_KEY", "api_key": "abc", "client_secret": "s",
                   "max_tokens": 5, "note": "Bearer abcdefghij"})
    assert kept == {"credential": "cli", "api_key_env": "MY_KEY", "api_key": "***", "client_secret": "***",
                    "max_tokens": 5, "note": "***"}


def test_environment_secrets_are_found_by_name_whatever_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtune.secrets import scrub

    planted = {"HUGGING_FACE_HUB_TOKEN": "hubTokenValue123", "AZURE_OPENAI_AD_TOKEN": "adTokenValue4567",
               "OPENAI_ADMIN_KEY": "adminKeyValue890", "MY_DB_PASSWORD": "pw-Value-0001",
               "X_CONNECTION_STRING": "Server=db;Pwd=abc123", "EXPORT_SAS": "sasValue01234",
               "APP_SECRET": "appSecretValue1"}
    harmless = {"PIP_KEYRING_PROVIDER": "disabled", "SHORT_TOKEN": "abc12", "EMPTY_KEY": "",
                "SIGNING_KEY_FILE": "/etc/cloudtune/signing.pem"}
    for name, value in {**planted, **harmless}.items():
        monkeypatch.setenv(name, value)
    text = scrub(" | ".join([*planted.values(), *harmless.values()]))
    assert not any(value in text for value in planted.values()), text
    assert all(value in text for value in harmless.values() if value), text


def test_scrub_sees_the_environment_as_it_is_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrub() works out the environment's secrets once per distinct environment: a variable set,
    changed or removed after an earlier call counts at the next call."""
    from cloudtune.secrets import scrub

    monkeypatch.delenv("LATE_API_KEY", raising=False)
    assert scrub("value firstSecret1234") == "value firstSecret1234"  # nothing secret yet: kept
    monkeypatch.setenv("LATE_API_KEY", "firstSecret1234")
    assert scrub("value firstSecret1234") == "value ***"
    assert scrub('{"k": "firstSecret1234"}') == '{"k": "***"}'
    monkeypatch.setenv("LATE_API_KEY", "secondSecret567")
    assert scrub("firstSecret1234 secondSecret567") == "firstSecret1234 ***"
    monkeypatch.delenv("LATE_API_KEY")
    assert scrub("secondSecret567") == "secondSecret567"


def test_plugins_are_looked_up_again_when_sys_path_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points are kept per sys.path: a plugin put on the path after a first lookup is found."""
    assert "later" not in registry.known_providers()
    dist = tmp_path / "cloudtune_plugin_later-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudtune-plugin-later\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cloudtune.providers]\nlater = tests.support.memory_provider:MemoryProvider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.known_providers()["later"].target == "tests.support.memory_provider:MemoryProvider"
    monkeypatch.undo()
    assert "later" not in registry.known_providers()
