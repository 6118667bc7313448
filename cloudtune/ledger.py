"""The run ledger: SQLite (stdlib) in WAL mode under ``CLOUDTUNE_HOME``.

Every remote step is written down *before* it is sent (an intent) and again
after (its result: file ids, job id, deployment names, model id). A run killed
at any instant - ``kill -9`` included - leaves either no intent, an intent
without a result (the pipeline then asks the provider what happened), or both.
Nothing secret is written: every document passes through :func:`redact`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.fsperm import home_directory, private_dir, private_file
from cloudtune.secrets import REDACTED, redact  # noqa: F401 - re-exported
from cloudtune.types import FineTuneSpec, Run, utcnow

SCHEMA = """
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
"""

def cloudtune_home() -> Path:
    """CLOUDTUNE_HOME (default ~/.cloudtune), owner-only (0700): it holds copies of training data."""
    return home_directory(Path(os.environ.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune"))


def new_run_id() -> str:
    # sortable by time, short enough to type
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class StepRecord:
    id: int
    run_id: str
    action: str
    phase: str
    intent_id: int | None
    at: float
    data: dict[str, Any]


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cloudtune_home() / "ledger.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only before SQLite opens it: its -wal and -shm files are created with the database's mode
        for database_file in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            if database_file == self.path or database_file.exists():
                private_file(database_file)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed step survives the process being killed and the machine losing power.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ------------------------------------------------------------ runs
    def create_run(self, spec: FineTuneSpec, run_id: str | None = None) -> Run:
        run = Run(run_id=run_id or new_run_id(), spec=spec, provider=spec.provider)
        doc = json.dumps(redact(run.model_dump(mode="json")))
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.provider, now, now, run.status, run.step.value, doc),
            )
        return run

    def adopt_run(self, run: Run) -> Run:
        """Record a run rebuilt from its provider (a machine whose ledger never saw it)."""
        doc = json.dumps(redact(run.model_dump(mode="json")))
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.provider, run.created_at.timestamp(), now, run.status, run.step.value, doc),
            )
        return run

    def save(self, run: Run) -> Run:
        run.updated_at = utcnow()
        doc = json.dumps(redact(run.model_dump(mode="json")))
        with self._tx() as conn:
            conn.execute(
                "UPDATE runs SET updated_at=?, status=?, step=?, doc=? WHERE run_id=?",
                (time.time(), run.status, run.step.value, doc, run.run_id),
            )
        return run

    def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` names: its exact id or a unique prefix (:mod:`cloudtune.run_selector`)."""
        from cloudtune.run_selector import select_run_id

        rows = self._conn.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchall()
        if not rows:
            exact = select_run_id(run_id, self.run_ids(), where=f"the ledger at {self.path}")
            rows = self._conn.execute("SELECT doc FROM runs WHERE run_id = ?", (exact,)).fetchall()
        return Run.model_validate_json(rows[0][0])

    def run_ids(self) -> list[str]:
        """Every run id in the ledger, newest first."""
        return [row[0] for row in self._conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC")]

    def latest_run_id(self) -> str | None:
        row = self._conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def list_runs(self, limit: int = 50, older_than_s: float | None = None) -> list[Run]:
        query, args = "SELECT doc FROM runs", []  # type: ignore[var-annotated]
        if older_than_s is not None:
            query += " WHERE created_at <= ?"
            args.append(time.time() - older_than_s)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [Run.model_validate_json(row[0]) for row in self._conn.execute(query, args)]

    # ----------------------------------------------------------- steps
    def intent(self, run_id: str, action: str, **data: Any) -> int:
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO steps (run_id, action, phase, intent_id, at, data) VALUES (?, ?, 'intent', NULL, ?, ?)",
                (run_id, action, time.time(), json.dumps(redact(data), default=str)),
            )
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def result(self, run_id: str, action: str, intent_id: int | None, *, phase: str = "result", **data: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO steps (run_id, action, phase, intent_id, at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, action, phase, intent_id, time.time(), json.dumps(redact(data), default=str)),
            )

    def history(self, run_id: str) -> list[StepRecord]:
        rows = self._conn.execute(
            "SELECT id, run_id, action, phase, intent_id, at, data FROM steps WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def pending_intents(self, run_id: str, action: str | None = None) -> list[StepRecord]:
        """Intents with no result or error recorded: their outcome is unknown."""
        history = self.history(run_id)
        answered = {r.intent_id for r in history if r.phase != "intent"}
        return [r for r in history if r.phase == "intent" and r.id not in answered and (action is None or r.action == action)]
