"""``cloudtune state show``, ``state migrate --to URL`` and ``unlock RUN`` through the CLI, with the
memory provider and real PostgreSQL / Azurite servers."""

from __future__ import annotations

import json
import signal

import pytest

from cloudtune.state import connect_state
from tests.core.conftest import CLI, cli, kill9  # noqa: F401 - the cli fixture
from tests.support.state_servers import AzuriteServer, PostgresServer

pytestmark = pytest.mark.slow  # CLIs against real servers


def _runs(cli: CLI, count: int = 2) -> list[str]:
    ids = []
    for _ in range(count):
        result = cli.run_memory("--no-deploy", "--json")
        assert result.returncode == 0, result.stderr
        ids.append(json.loads(result.stdout)["run_id"])
    return ids


@pytest.mark.parametrize("backend", ["postgresql", "azblob"])
def test_migrate_copies_every_run_and_its_journal(cli: CLI, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        target = request.getfixturevalue("postgres_server").new_database()
    else:
        target = request.getfixturevalue("azurite").new_url()
    ids = _runs(cli)
    before = {run_id: json.loads(cli("status", run_id, "--offline", "--json").stdout) for run_id in ids}
    source = connect_state(f"sqlite:///{cli.tmp / 'home' / 'ledger.sqlite3'}")
    journals = {run_id: [(s.action, s.phase, s.data) for s in source.history(run_id)] for run_id in ids}
    source.close()

    moved = cli("state", "migrate", "--to", target, "--json")
    assert moved.returncode == 0, moved.stderr
    doc = json.loads(moved.stdout)
    assert sorted(doc["copied"]) == sorted(ids) and doc["verified"]

    listed = cli("list", "--json", CLOUDTUNE_STATE=target)
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == ids[::-1]
    for run_id in ids:
        after = json.loads(cli("status", run_id, "--offline", "--json", CLOUDTUNE_STATE=target).stdout)
        assert after == before[run_id]
    copy = connect_state(target)
    try:
        assert {run_id: [(s.action, s.phase, s.data) for s in copy.history(run_id)] for run_id in ids} == journals
    finally:
        copy.close()
    again = cli("state", "migrate", "--to", target, "--json")  # nothing twice: identical runs are recognised
    assert again.returncode == 0 and sorted(json.loads(again.stdout)["already_there"]) == sorted(ids)

    shown = cli("state", "show", "--json", CLOUDTUNE_STATE=target)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["backend"] == backend and json.loads(shown.stdout)["runs"] == 2


def test_state_show_names_the_lock_holders(cli: CLI, postgres_server: PostgresServer) -> None:
    state = postgres_server.new_database()
    driver = cli.start_memory("--json", CLOUDTUNE_STATE=state, CLOUDTUNE_MEMORY_HANG="create_job")
    try:
        cli.wait_for_hang(driver)
        shown = cli("state", "show", "--json", CLOUDTUNE_STATE=state)
        assert shown.returncode == 0, shown.stderr
        (lock,) = json.loads(shown.stdout)["locks"]
        assert lock["pid"] == driver.pid and lock["command"].startswith("cloudtune run")
        text = cli("state", "show", CLOUDTUNE_STATE=state).stdout
        assert "backend:        postgresql" in text and f"pid {driver.pid}" in text and "schema version: 1" in text
    finally:
        kill9(driver)


def test_unlock_breaks_a_dead_runners_lease_after_showing_it(cli: CLI, azurite: AzuriteServer) -> None:
    state = azurite.new_url()  # the default 60-second lease: only unlock frees it this quickly
    driver = cli.start_memory("--json", CLOUDTUNE_STATE=state, CLOUDTUNE_MEMORY_HANG="create_job")
    cli.wait_for_hang(driver)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    run_id = json.loads(cli("list", "--json", CLOUDTUNE_STATE=state).stdout)["runs"][0]["run_id"]
    assert cli("resume", run_id, CLOUDTUNE_STATE=state).returncode == 6

    broken = cli("unlock", run_id, CLOUDTUNE_STATE=state)
    assert broken.returncode == 0, broken.stderr
    assert f"locked by pid {driver.pid}" in broken.stdout and "cloudtune run" in broken.stdout
    resumed = cli("resume", run_id, "--json", CLOUDTUNE_STATE=state)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    assert len(cli.state()["jobs"]) == 1
    assert "not locked" in cli("unlock", run_id, CLOUDTUNE_STATE=state).stdout


def test_unlock_of_a_live_flock_holder_is_refused_naming_it(cli: CLI) -> None:
    driver = cli.start_memory("--json", CLOUDTUNE_MEMORY_HANG="create_job")
    try:
        cli.wait_for_hang(driver)
        run_id = json.loads(cli("list", "--json").stdout)["runs"][0]["run_id"]
        refused = cli("unlock", run_id)
        assert refused.returncode == 6 and f"pid {driver.pid}" in refused.stdout + refused.stderr
    finally:
        kill9(driver)


def test_an_unknown_state_url_is_exit_2(cli: CLI) -> None:
    result = cli("list", CLOUDTUNE_STATE="ftp://example/state")
    assert result.returncode == 2 and "ftp://example/state" in result.stderr
    flag = cli("--state", "mysql://x/y", "list")
    assert flag.returncode == 2 and "mysql://x/y" in flag.stderr


def test_a_local_run_driven_from_another_machine_says_where_it_lives(
        cli: CLI, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtune.types import FineTuneSpec

    state = postgres_server.new_database()
    monkeypatch.setenv("CLOUDTUNE_HOME", str(cli.tmp / "home-a"))  # machine A records the run
    store = connect_state(state)
    run = store.create_run(FineTuneSpec(provider="local", base_model="tiny", training_file=cli.tmp / "train.jsonl"))
    run.job_id = "local-job-on-a"
    store.save(run)
    store.close()

    elsewhere = cli("resume", run.run_id, CLOUDTUNE_STATE=state, CLOUDTUNE_HOME=str(cli.tmp / "home-b"))
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert str(cli.tmp / "home-a") in elsewhere.stderr and "not on this one" in elsewhere.stderr
    assert "internal error" not in elsewhere.stderr
    shown = cli("status", run.run_id, "--offline", "--json", CLOUDTUNE_STATE=state,
                CLOUDTUNE_HOME=str(cli.tmp / "home-b"))
    assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == "local-job-on-a"


def test_unlock_on_postgresql_ends_the_holders_session(cli: CLI, postgres_server: PostgresServer) -> None:
    state = postgres_server.new_database()
    driver = cli.start_memory("--json", CLOUDTUNE_STATE=state, CLOUDTUNE_MEMORY_HANG="create_job")
    try:
        cli.wait_for_hang(driver)  # alive, holding the run, never finishing
        run_id = json.loads(cli("list", "--json", CLOUDTUNE_STATE=state).stdout)["runs"][0]["run_id"]
        assert cli("resume", run_id, CLOUDTUNE_STATE=state).returncode == 6
        broken = cli("unlock", run_id, "--json", CLOUDTUNE_STATE=state)
        assert broken.returncode == 0, broken.stderr
        assert f"pid {driver.pid}" in json.loads(broken.stdout)["holder"]
        resumed = cli("resume", run_id, "--json", CLOUDTUNE_STATE=state)
        assert resumed.returncode == 0, resumed.stderr
        assert len(cli.state()["jobs"]) == 1
    finally:
        kill9(driver)


def test_state_in_a_run_config_records_the_run_there(cli: CLI, postgres_server: PostgresServer) -> None:
    state = postgres_server.new_database()
    (cli.tmp / "run.yaml").write_text(f"state: {state}\nsuffix: cfg\n")
    result = cli.run_memory("run.yaml", "--no-deploy", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    assert not (cli.tmp / "home" / "ledger.sqlite3").exists() or run_id not in cli("list").stdout
    assert [r["run_id"] for r in json.loads(cli("list", "--json", CLOUDTUNE_STATE=state).stdout)["runs"]] == [run_id]
