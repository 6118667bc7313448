"""State in PostgreSQL: runs and their journal in tables, the run lock a session advisory lock.

For a team with a database (``CLOUDTUNE_STATE=postgresql://user@host:5432/db``, ``pip install
'cloudtune[postgres]'``, psycopg 3). The model follows Terraform's ``pg`` backend
(hashicorp/terraform ``internal/backend/remote-state/pg``): each write is one transaction, and a
run's lock is ``pg_try_advisory_lock`` on a stable 64-bit hash of its id, taken on the command's
own connection and held for the command's life. PostgreSQL releases a session lock the moment
the session ends, so a holder killed with ``kill -9`` (or cut off the network) frees the run at
once. Who holds it (host, pid, command, since) is a row beside the lock, trusted only while the
holder's backend still holds the advisory lock (``pg_locks``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from cloudtune import errors
from cloudtune.state import redacted_url
from cloudtune.state.base import SCHEMA_VERSION, LockHolder, StateSettings, StateStore, StepRecord, refuse_newer

# Each entry brings the schema from the version before it to its own (index + 1).
MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS cloudtune_runs (
        run_id     text PRIMARY KEY,
        provider   text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        status     text NOT NULL,
        step       text NOT NULL,
        doc        text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloudtune_runs_created ON cloudtune_runs (created_at DESC, run_id DESC);
    CREATE TABLE IF NOT EXISTS cloudtune_steps (
        id        bigserial PRIMARY KEY,
        run_id    text NOT NULL REFERENCES cloudtune_runs (run_id),
        action    text NOT NULL,
        phase     text NOT NULL CHECK (phase IN ('intent', 'result', 'error')),
        intent_id bigint,
        at        double precision NOT NULL,
        data      text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloudtune_steps_run ON cloudtune_steps (run_id, id);
    CREATE TABLE IF NOT EXISTS cloudtune_locks (
        run_id      text PRIMARY KEY,
        lock_key    bigint NOT NULL,
        holder      text NOT NULL,
        backend_pid integer NOT NULL
    )
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION
_MIGRATION_LOCK = 0x636C6F7564  # "cloud": one migrator at a time (transaction-level advisory lock)


def lock_key(run_id: str) -> int:
    """A stable signed 64-bit key for the run (the same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha256(f"cloudtune-run:{run_id}".encode()).digest()[:8], "big", signed=True)


class PostgresStore(StateStore):
    backend = "postgresql"

    def __init__(self, url: str, settings: StateSettings | None = None) -> None:
        super().__init__()
        self._url = url
        self._mutex = threading.RLock()  # one connection (it holds the locks), its threads one at a time
        try:
            self._conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                                         connect_timeout=int((settings or StateSettings()).number("connect_timeout", 10)))
        except psycopg.Error as exc:
            raise self._unusable(exc) from None
        with self._guard():
            version = self._version()
            refuse_newer(version, self.location)  # before anything below writes to it
            if version < SCHEMA_VERSION:
                self._migrate()

    @classmethod
    def from_url(cls, url: str, settings: StateSettings) -> "PostgresStore":
        from urllib.parse import urlsplit

        return cls(urlsplit(url)._replace(query="").geturl() if settings.values else url, settings)

    @property
    def location(self) -> str:
        return redacted_url(self._url)

    def _unusable(self, exc: Exception) -> errors.StateUnusable:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return errors.StateUnusable(
            f"The PostgreSQL state at {self.location} cannot be used ({first_line}).",
            hint="Check CLOUDTUNE_STATE and that the server is reachable (psql with the same URL).")

    @contextmanager
    def _guard(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._mutex:
                yield self._conn
        except (psycopg.OperationalError, psycopg.errors.DataCorrupted) as exc:
            raise self._unusable(exc) from None

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        with self._guard() as conn, conn.transaction():
            yield conn

    def _version(self) -> int:
        row = self._conn.execute("SELECT to_regclass('cloudtune_meta') IS NOT NULL, "
                                 "to_regclass('cloudtune_runs') IS NOT NULL").fetchone()
        if row and row[0]:
            found = self._conn.execute("SELECT value FROM cloudtune_meta WHERE key='schema_version'").fetchone()
            return int(found[0]) if found else 0
        return 0

    def _migrate(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._conn.execute("CREATE TABLE IF NOT EXISTS cloudtune_meta (key text PRIMARY KEY, value text NOT NULL)")
            found = self._conn.execute("SELECT value FROM cloudtune_meta WHERE key='schema_version'").fetchone()
            version = int(found[0]) if found else 0
            refuse_newer(version, self.location)
            for script in MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    self._conn.execute(statement)  # type: ignore[arg-type]
            self._conn.execute("INSERT INTO cloudtune_meta (key, value) VALUES ('schema_version', %s) "
                               "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        with self._guard():
            return self._version()

    def close(self) -> None:
        super().close()
        self._conn.close()  # ends the session: any advisory lock still held goes with it

    # ------------------------------------------------------------------ runs
    def _write_run(self, run_id: str, provider: str, created_at: float, status: str, step: str,
                   doc: str, *, mode: str) -> None:
        import time

        now = time.time()
        with self._tx() as conn:
            if mode == "update":
                conn.execute("UPDATE cloudtune_runs SET updated_at=%s, status=%s, step=%s, doc=%s WHERE run_id=%s",
                             (now, status, step, doc, run_id))
                return
            conflict = (" ON CONFLICT (run_id) DO UPDATE SET provider=EXCLUDED.provider, created_at=EXCLUDED.created_at, "
                        "updated_at=EXCLUDED.updated_at, status=EXCLUDED.status, step=EXCLUDED.step, doc=EXCLUDED.doc"
                        if mode == "replace" else "")
            conn.execute("INSERT INTO cloudtune_runs (run_id, provider, created_at, updated_at, status, step, doc) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s)" + conflict,  # type: ignore[arg-type]
                         (run_id, provider, created_at, now, status, step, doc))

    def _read_run(self, run_id: str) -> str | None:
        with self._guard() as conn:
            row = conn.execute("SELECT doc FROM cloudtune_runs WHERE run_id = %s", (run_id,)).fetchone()
        return row[0] if row else None

    def _read_runs(self, run_ids: list[str]) -> list[tuple[str, str | None]]:
        if not run_ids:
            return []
        with self._guard() as conn:
            docs = dict(conn.execute("SELECT run_id, doc FROM cloudtune_runs WHERE run_id = ANY(%s)",
                                     (run_ids,)).fetchall())
        return [(run_id, docs.get(run_id)) for run_id in run_ids]

    def _run_ids(self, *, older_than: float | None = None, limit: int | None = None) -> list[str]:
        query, args = "SELECT run_id FROM cloudtune_runs", []  # type: ignore[var-annotated]
        if older_than is not None:
            query += " WHERE created_at <= %s"
            args.append(older_than)
        query += " ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            query += " LIMIT %s"
            args.append(limit)
        with self._guard() as conn:
            return [row[0] for row in conn.execute(query, args).fetchall()]  # type: ignore[arg-type]

    # ------------------------------------------------------------------ steps
    def _append_step(self, run_id: str, action: str, phase: str, intent_id: int | None, at: float,
                     data: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO cloudtune_steps (run_id, action, phase, intent_id, at, data) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id", (run_id, action, phase, intent_id, at, data)).fetchone()
        return int(row[0])  # type: ignore[index]

    def history(self, run_id: str) -> list[StepRecord]:
        with self._guard() as conn:
            rows = conn.execute("SELECT id, run_id, action, phase, intent_id, at, data FROM cloudtune_steps "
                                "WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # ------------------------------------------------------------------ locks: session advisory locks
    def _try_lock(self, holder: LockHolder) -> bool:
        key = lock_key(holder.run_id)
        with self._guard() as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
                return False
            conn.execute("INSERT INTO cloudtune_locks (run_id, lock_key, holder, backend_pid) "
                         "VALUES (%s, %s, %s, pg_backend_pid()) ON CONFLICT (run_id) DO UPDATE SET "
                         "lock_key=EXCLUDED.lock_key, holder=EXCLUDED.holder, backend_pid=EXCLUDED.backend_pid",
                         (holder.run_id, key, holder.to_json()))
        return True

    def _unlock(self, run_id: str) -> None:
        with self._guard() as conn:
            conn.execute("DELETE FROM cloudtune_locks WHERE run_id = %s AND backend_pid = pg_backend_pid()", (run_id,))
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(run_id),))

    # A holder row counts only while its backend still holds the advisory lock for that key: a row
    # left by a killed holder describes nobody.
    _LIVE = """
        SELECT l.run_id, l.holder, l.backend_pid FROM cloudtune_locks l
        WHERE EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.granted AND p.pid = l.backend_pid
                      AND p.objsubid = 1
                      AND p.classid::bigint = ((l.lock_key >> 32) & 4294967295)
                      AND p.objid::bigint = (l.lock_key & 4294967295))
    """

    def _live_rows(self, run_id: str | None = None) -> list[tuple[str, str, int]]:
        query, args = self._LIVE, []  # type: ignore[var-annotated]
        if run_id is not None:
            query += " AND l.run_id = %s"
            args.append(run_id)
        with self._guard() as conn:
            return [tuple(r) for r in conn.execute(query + " ORDER BY l.run_id", args).fetchall()]  # type: ignore

    def lock_holder(self, run_id: str) -> LockHolder | None:
        rows = self._live_rows(run_id)
        return LockHolder.from_json(rows[0][1], run_id) if rows else None

    def lock_holders(self) -> list[LockHolder]:
        return [h for run_id, text, _ in self._live_rows() if (h := LockHolder.from_json(text, run_id))]

    def break_lock(self, run_id: str) -> LockHolder | None:
        """Ends the holder's database session (``pg_terminate_backend``): its lock goes with it."""
        rows = self._live_rows(run_id)
        if not rows:
            return None
        with self._guard() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (rows[0][2],))
        return LockHolder.from_json(rows[0][1], run_id)
