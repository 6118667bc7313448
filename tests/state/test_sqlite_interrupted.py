"""A signal can interrupt a ledger write between any two bytecodes (``interruptible`` raises from its
handler): just after BEGIN, or after a COMMIT that failed. The SQLite store must not leave that
transaction open on its one connection - the next write (the one recording the interruption) would
fail with "cannot start a transaction within a transaction" (seen once in the fault matrix under load)
and the open transaction would hold the write lock against every other process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloudtune.state.sqlite import SQLiteStore
from cloudtune.types import FineTuneSpec


def _store_with_run(path: Path) -> tuple[SQLiteStore, str]:
    store = SQLiteStore(path)
    run = store.create_run(FineTuneSpec(provider="local", base_model="tiny", training_file="t.jsonl"))
    return store, run.run_id


def test_a_transaction_an_interrupted_call_left_open_is_rolled_back(tmp_path: Path) -> None:
    store, run_id = _store_with_run(tmp_path / "ledger.sqlite3")
    # what an interrupted write leaves behind: BEGIN done, a half-written row, no COMMIT
    store._conn.execute("BEGIN IMMEDIATE")
    store._conn.execute("UPDATE runs SET status='half-written' WHERE run_id=?", (run_id,))

    run = store.get_run(run_id)  # the uncommitted write is not read back as the run's state
    assert run.status != "half-written"
    run.fine_tuned_model = "ft:recorded-after-the-interruption"
    store.save(run)  # the next write succeeds instead of "within a transaction"

    # another process's connection sees the committed write and can write itself (no lock left held)
    other = sqlite3.connect(tmp_path / "ledger.sqlite3", timeout=1, isolation_level=None)
    assert other.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()[0] != "half-written"
    assert "ft:recorded-after-the-interruption" in other.execute("SELECT doc FROM runs WHERE run_id=?",
                                                                 (run_id,)).fetchone()[0]
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()
    store.close()


def test_a_failed_commit_rolls_back_and_the_next_write_goes_through(tmp_path: Path) -> None:
    store, run_id = _store_with_run(tmp_path / "ledger.sqlite3")
    run = store.get_run(run_id)
    # SQLite's own progress hook aborts the COMMIT statement, as SQLITE_BUSY or a signal would
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store._conn.set_progress_handler(lambda: 1 if statements[-1:] == ["COMMIT"] else 0, 1)
    run.fine_tuned_model = "ft:never-committed"
    with pytest.raises(Exception):
        store.save(run)
    assert "COMMIT" in statements and statements[-1] == "ROLLBACK"
    store._conn.set_progress_handler(None, 1)
    store._conn.set_trace_callback(None)

    assert not store._conn.in_transaction
    assert store.get_run(run_id).fine_tuned_model is None
    run.fine_tuned_model = "ft:committed"
    store.save(run)
    assert SQLiteStore(tmp_path / "ledger.sqlite3").get_run(run_id).fine_tuned_model == "ft:committed"
    store.close()
