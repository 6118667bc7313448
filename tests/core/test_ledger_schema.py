"""A ledger this cloudtune cannot fully read: a newer schema is refused untouched, one unreadable
run is reported and skipped, a damaged file is exit 2 naming it and the way back."""

from __future__ import annotations

import hashlib
import json
import sqlite3

from tests.core.conftest import CLI


def _two_runs(cli: CLI) -> tuple[str, str]:
    ids = []
    for _ in range(2):
        result = cli.run_memory("--no-deploy", "--json")
        assert result.returncode == 0, result.stderr
        ids.append(json.loads(result.stdout)["run_id"])
    return ids[0], ids[1]


def _ledger(cli: CLI) -> sqlite3.Connection:
    return sqlite3.connect(cli.tmp / "home" / "ledger.sqlite3", isolation_level=None)


def _database_digest(cli: CLI) -> str:
    return hashlib.sha256((cli.tmp / "home" / "ledger.sqlite3").read_bytes()).hexdigest()


def test_a_run_written_by_a_newer_cloudtune_is_reported_and_skipped(cli: CLI) -> None:
    older, newer = _two_runs(cli)
    with _ledger(cli) as db:
        doc = json.loads(db.execute("SELECT doc FROM runs WHERE run_id=?", (newer,)).fetchone()[0])
        doc["step"] = "quantum_tunnelled"  # a step this cloudtune has never heard of
        db.execute("UPDATE runs SET doc=?, step=? WHERE run_id=?", (json.dumps(doc), doc["step"], newer))

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert older in listed.stdout and newer not in listed.stdout
    assert newer in listed.stderr and "skipped" in listed.stderr and "step" in listed.stderr

    as_json = json.loads(cli("list", "--json").stdout)
    assert [r["run_id"] for r in as_json["runs"]] == [older]
    assert [u["run_id"] for u in as_json["unreadable"]] == [newer]

    assert cli("status", older, "--offline").returncode == 0
    refused = cli("status", newer, "--offline")
    assert refused.returncode == 2 and newer in refused.stderr and "internal error" not in refused.stderr

    swept = cli("cleanup", "--older-than", "0s", "--json")
    assert swept.returncode == 0, swept.stderr
    assert [r["run_id"] for r in json.loads(swept.stdout)["runs"]] == [older]
    assert newer in swept.stderr


def test_an_extra_column_from_a_newer_cloudtune_does_not_break_run(cli: CLI) -> None:
    _two_runs(cli)
    with _ledger(cli) as db:
        db.execute("ALTER TABLE runs ADD COLUMN region TEXT")
    result = cli.run_memory("--no-deploy", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(cli("list", "--json").stdout)["runs"]) == 3


def test_a_newer_schema_is_refused_and_never_written(cli: CLI) -> None:
    older, _ = _two_runs(cli)
    db = _ledger(cli)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.close()  # the last connection: everything is in the database file now
    before = _database_digest(cli)
    for command in (("list",), ("status", older, "--offline"), ("cleanup", older)):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "schema version 99" in result.stderr and "internal error" not in result.stderr
    assert cli.run_memory("--no-deploy").returncode == 2
    assert _database_digest(cli) == before


def test_a_damaged_ledger_is_exit_2_naming_the_file_and_the_way_back(cli: CLI) -> None:
    older, _ = _two_runs(cli)
    path = cli.tmp / "home" / "ledger.sqlite3"
    for side in ("-wal", "-shm"):
        (cli.tmp / "home" / f"ledger.sqlite3{side}").unlink(missing_ok=True)
    path.write_bytes(b"this is not what SQLite wrote" * 100)

    result = cli("status", older, "--offline", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]  # --json still prints its one document
    assert str(path) in error["message"]
    assert "intact" not in result.stderr and "internal error" not in result.stderr
    assert "resume RUN --provider P CONFIG" in result.stderr
    for command in (("list",), ("run", "--provider", "tests.support.memory_provider:MemoryProvider",
                                "--model", "base", "--train", "train.jsonl")):
        again = cli(*command)
        assert again.returncode == 2 and str(path) in again.stderr, again.stderr
