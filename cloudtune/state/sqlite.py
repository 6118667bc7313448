"""The default state: SQLite (stdlib) in WAL mode under ``CLOUDTUNE_HOME``, run locks by ``flock``.

For one machine. Each write is a transaction with ``synchronous=FULL``, so a committed step
survives ``kill -9`` and power loss. The run lock is an ``flock`` on ``locks/RUN.lock`` beside the
database (like Terraform's local state lock): the kernel drops it when the holder dies, and the
holder writes who it is into the file. Neither WAL nor ``flock`` is reliable on NFS/SMB: a fleet of
machines shares a PostgreSQL or Azure Blob state instead (:mod:`cloudtune.state`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloudtune import errors
from cloudtune.fsperm import private_file
from cloudtune.state.base import SCHEMA_VERSION, LockHolder, StateStore, StepRecord, cloudtune_home, refuse_newer

# Each entry brings the database from the version before it to its own (index + 1).
MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id     TEXT PRIMARY KEY,
        provider   TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        status     TEXT NOT NULL,
        step       TEXT NOT NULL,
        doc        TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS steps (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id    TEXT NOT NULL REFERENCES runs(run_id),
        action    TEXT NOT NULL,
        phase     TEXT NOT NULL CHECK (phase IN ('intent', 'result', 'error')),
        intent_id INTEGER,
        at        REAL NOT NULL,
        data      TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id, id);
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


class SQLiteStore(StateStore):
    backend = "sqlite"

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path else cloudtune_home() / "ledger.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only before SQLite opens it: its -wal and -shm files are created with the database's mode
        for database_file in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            if database_file == self.path or database_file.exists():
                private_file(database_file)
        self._fds: dict[str, int] = {}
        # one connection per process (see cloudtune.state.open_state), shared by its threads one at a time
        self._mutex = threading.RLock()
        self._guard_depth = 0  # nested _guard calls on this thread (the mutex is re-entrant)
        self._conn_ready = False
        with self._guard():
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn_ready = True
            version = self._version()
            refuse_newer(version, str(self.path))  # before anything below writes to it
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed step survives the process being killed and the machine losing power.
            self._conn.execute("PRAGMA synchronous=FULL")
            if version < SCHEMA_VERSION:
                self._migrate(version)

    @property
    def location(self) -> str:
        return str(self.path)

    def _version(self) -> int:
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            return int(row[0]) if row else 0
        return 1 if "runs" in tables else 0  # a ledger from before schema versions is version 1

    def _migrate(self, version: int) -> None:
        with self._transaction():
            self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for script in MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    self._conn.execute(statement)
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        with self._guard():
            return self._version()

    def close(self) -> None:
        super().close()
        self._conn.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A damaged database file is the user's to fix, not a cloudtune bug: exit 2 saying how."""
        try:
            with self._mutex:
                self._guard_depth += 1
                try:
                    if self._guard_depth == 1 and self._conn_ready and self._conn.in_transaction:
                        # an interrupted call's transaction (see _transaction): it would hold the write
                        # lock against every other process, and a read inside it sees its uncommitted writes
                        self._conn.execute("ROLLBACK")
                    yield
                finally:
                    self._guard_depth -= 1
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            raise self._unusable(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> errors.StateUnusable:
        return errors.StateUnusable(
            f"The ledger {self.path} is damaged and cannot be read ({exc}).",
            hint=f"Move it aside (mv {self.path} {self.path}.broken); then `cloudtune resume RUN --provider P CONFIG` "
                 "rebuilds each run from what its provider holds.")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT that never leaves a transaction open on the shared connection.

        A SIGINT/SIGTERM handler raises between any two bytecodes (see command_helpers.interruptible),
        so it can land just after BEGIN or after a failed COMMIT (busy under load): the transaction would
        stay open and every later write on this connection (the one recording the interruption first)
        would fail with "cannot start a transaction within a transaction". So BEGIN and COMMIT sit inside
        the try, and a transaction an interrupted call left open is rolled back before the next begins
        (its writes were never committed, so nothing is lost that had been reported as done)."""
        try:
            if self._conn.in_transaction:  # left open by an interrupted call (when not guarded)
                self._conn.execute("ROLLBACK")
            self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._guard(), self._transaction() as conn:
            yield conn

    # ------------------------------------------------------------------ runs
    def _write_run(self, run_id: str, provider: str, created_at: float, status: str, step: str,
                   doc: str, *, mode: str) -> None:
        import time

        now = time.time()
        with self._tx() as conn:
            if mode == "update":
                conn.execute("UPDATE runs SET updated_at=?, status=?, step=?, doc=? WHERE run_id=?",
                             (now, status, step, doc, run_id))
            else:
                verb = "INSERT OR REPLACE" if mode == "replace" else "INSERT"
                # columns named: a newer cloudtune may have added some
                conn.execute(f"{verb} INTO runs (run_id, provider, created_at, updated_at, status, step, doc) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, provider, created_at, now, status, step, doc))

    def _read_run(self, run_id: str) -> str | None:
        with self._guard():
            row = self._conn.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def _read_runs(self, run_ids: list[str]) -> list[tuple[str, str | None]]:
        if not run_ids:
            return []
        with self._guard():
            marks = ",".join("?" * len(run_ids))
            docs = dict(self._conn.execute(f"SELECT run_id, doc FROM runs WHERE run_id IN ({marks})", run_ids))
        return [(run_id, docs.get(run_id)) for run_id in run_ids]

    def _run_ids(self, *, older_than: float | None = None, limit: int | None = None) -> list[str]:
        query, args = "SELECT run_id FROM runs", []  # type: ignore[var-annotated]
        if older_than is not None:
            query += " WHERE created_at <= ?"
            args.append(older_than)
        query += " ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with self._guard():
            return [row[0] for row in self._conn.execute(query, args)]

    # ------------------------------------------------------------------ steps
    def _append_step(self, run_id: str, action: str, phase: str, intent_id: int | None, at: float,
                     data: str) -> int:
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO steps (run_id, action, phase, intent_id, at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, action, phase, intent_id, at, data))
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def history(self, run_id: str) -> list[StepRecord]:
        import json

        with self._guard():
            rows = self._conn.execute(
                "SELECT id, run_id, action, phase, intent_id, at, data FROM steps WHERE run_id = ? ORDER BY id",
                (run_id,)).fetchall()
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # ------------------------------------------------------------------ locks: flock
    def _lock_path(self, run_id: str) -> Path:
        folder = self.path.parent / "locks"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / f"{run_id}.lock"

    def _try_lock(self, holder: LockHolder) -> bool:
        fd = os.open(self._lock_path(holder.run_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, holder.to_json().encode())
        self._fds[holder.run_id] = fd
        return True

    def _unlock(self, run_id: str) -> None:
        fd = self._fds.pop(run_id, None)
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def lock_holder(self, run_id: str) -> LockHolder | None:
        try:
            text = self._lock_path(run_id).read_text().strip()
        except OSError:
            return None
        if not text:
            return None
        return LockHolder.from_json(text, run_id) or LockHolder(run_id, "this machine", 0, text, 0.0)

    def lock_holders(self) -> list[LockHolder]:
        held = []
        for path in sorted((self.path.parent / "locks").glob("*.lock")):
            run_id = path.name[: -len(".lock")]
            if run_id in self._locks or self._probe_locked(path):
                holder = self.lock_holder(run_id)
                if holder:
                    held.append(holder)
        return held

    @staticmethod
    def _probe_locked(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
