"""The one interface through which cloudtune reaches its state: :class:`StateStore`.

A store keeps three things, whatever holds them (a SQLite file, PostgreSQL tables, one JSON
blob per run):

- **runs**: one document per run (the pydantic ``Run``, redacted), loaded, saved and listed;
- **steps**: the run's journal, an intent written before every remote call and a result or
  error after it (see :mod:`cloudtune.pipeline`);
- **run locks**: one driver per run. The lock is held for the whole command and names its
  holder (host, pid, command, since); the backend's own mechanism drops it when the holder dies
  (``flock``, a PostgreSQL session advisory lock, a blob lease that is no longer renewed).

Backends implement the small ``_``-prefixed primitives; parsing, redaction, run selectors,
waiting for a lock and the "one unreadable record never blocks the others" rule live here once.
Like Terraform's remote state, a store written by a newer cloudtune (a higher schema version)
is refused, never written to.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cloudtune import errors, timescale
from cloudtune.fsperm import home_directory

# Version 1: runs (one redacted JSON document each) and steps. A store whose version is higher
# was written by a newer cloudtune: refused, never written to.
SCHEMA_VERSION = 1


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


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run's lock: enough for a person to find the process."""

    run_id: str
    host: str
    pid: int
    command: str
    since: float  # epoch seconds

    @classmethod
    def me(cls, run_id: str, command: str | None = None) -> "LockHolder":
        return cls(run_id, socket.gethostname(), os.getpid(),
                   command or " ".join(["cloudtune", *sys.argv[1:3]]), time.time())

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"pid {self.pid} on {self.host} ({self.command}) since {since}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes | None, run_id: str) -> "LockHolder | None":
        try:
            data = json.loads(text or "")
            return cls(run_id, str(data["host"]), int(data["pid"]), str(data["command"]), float(data["since"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Unreadable:
    """A record this cloudtune cannot read (written by a newer one, or damaged): skipped, reported."""

    run_id: str
    reason: str


def describe_unreadable(items: list[Unreadable]) -> list[str]:
    return [f"run {u.run_id} cannot be read by this cloudtune and was skipped: {u.reason}" for u in items]


def this_machine() -> dict[str, str]:
    """This machine as runs record it: a provider that keeps jobs on disk keeps them here."""
    return {"host": socket.gethostname(), "home": str(cloudtune_home())}


class StateStore(ABC):
    """Runs, their step journal and their locks. Every method may raise
    :class:`errors.StateUnusable` (exit 2) when the store itself cannot be used (corrupt, written
    by a newer cloudtune, unreachable), naming where it is and how to recover."""

    #: the backend's name in ``state show`` and messages: sqlite | postgresql | azblob
    backend: str = ""

    def __init__(self) -> None:
        self.unreadable: list[Unreadable] = []  # what the last list/get skipped, for the commands to report
        self._locks: dict[str, LockHolder] = {}  # run ids this store holds (re-entrant within one process)
        self.on_unreadable: Callable[[Unreadable], None] | None = None

    # ------------------------------------------------------------------ what a backend provides
    @property
    @abstractmethod
    def location(self) -> str:
        """Where the state lives, for messages (a path or a URL without credentials)."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def _write_run(self, run_id: str, provider: str, created_at: float, status: str, step: str,
                   doc: str, *, mode: str) -> None:
        """``mode``: ``create`` (refuse an existing id), ``replace`` (adopt) or ``update``."""

    @abstractmethod
    def _read_run(self, run_id: str) -> str | None:
        """The run's document, or ``None`` when there is no such run."""

    @abstractmethod
    def _run_ids(self, *, older_than: float | None = None, limit: int | None = None) -> list[str]:
        """Run ids, newest first (by creation time)."""

    def _read_runs(self, run_ids: list[str]) -> list[tuple[str, str | None]]:
        """Several documents at once (a backend may fetch them in parallel)."""
        return [(run_id, self._read_run(run_id)) for run_id in run_ids]

    def _list_docs(self, older_than: float | None, limit: int | None) -> list[tuple[str, str | None]]:
        """The documents ``list`` shows, newest first (a backend may answer from summaries)."""
        return self._read_runs(self._run_ids(older_than=older_than, limit=limit))

    @abstractmethod
    def _append_step(self, run_id: str, action: str, phase: str, intent_id: int | None, at: float,
                     data: str) -> int: ...

    @abstractmethod
    def history(self, run_id: str) -> list[StepRecord]: ...

    @abstractmethod
    def _try_lock(self, holder: LockHolder) -> bool:
        """Take the run's lock without waiting; ``False`` when another process holds it."""

    @abstractmethod
    def _unlock(self, run_id: str) -> None: ...

    @abstractmethod
    def lock_holder(self, run_id: str) -> LockHolder | None:
        """Who holds the run's lock now (``None``: nobody, or unknown)."""

    @abstractmethod
    def lock_holders(self) -> list[LockHolder]:
        """Every run lock held now, for ``cloudtune state show``."""

    def break_lock(self, run_id: str) -> LockHolder | None:
        """Release a lock whose holder cannot (``cloudtune unlock``). Returns who held it."""
        holder = self.lock_holder(run_id)
        raise errors.RunLocked(
            f"The {self.backend} state cannot break a lock held by a live process"
            + (f": {holder.describe()}" if holder else "") + ".",
            hint="The lock is dropped the moment that process ends; stop it (kill PID) instead.")

    def close(self) -> None:
        for run_id in list(self._locks):
            self.release(run_id)

    # ------------------------------------------------------------------ runs
    def create_run(self, spec: Any, run_id: str | None = None) -> Any:
        from cloudtune.types import Run

        run = Run(run_id=run_id or new_run_id(), spec=spec, provider=spec.provider)
        self._write(run, mode="create")
        self.result(run.run_id, "created_on", None, **this_machine())  # where machine-local work lives
        return run

    def origin(self, run_id: str) -> dict[str, str] | None:
        """The machine (host and CLOUDTUNE_HOME) the run was created on, if recorded."""
        for step in self.history(run_id):
            if step.action == "created_on":
                return {k: str(v) for k, v in step.data.items()}
        return None

    def adopt_run(self, run: Any) -> Any:
        """Record a run rebuilt from its provider (a machine whose state never saw it)."""
        self._write(run, mode="replace")
        return run

    def save(self, run: Any) -> Any:
        from cloudtune.types import utcnow

        run.updated_at = utcnow()
        self._write(run, mode="update")
        return run

    def import_run(self, run: Any, steps: list[StepRecord]) -> None:
        """Copy a run and its journal from another store (``cloudtune state migrate``)."""
        self._write(run, mode="replace")
        ids: dict[int, int] = {}
        for step in steps:
            intent = ids.get(step.intent_id) if step.intent_id is not None else None
            ids[step.id] = self._append_step(run.run_id, step.action, step.phase, intent, step.at,
                                             json.dumps(step.data, default=str))

    def _write(self, run: Any, *, mode: str) -> None:
        from cloudtune.secrets import redact

        doc = json.dumps(redact(run.model_dump(mode="json")))
        self._write_run(run.run_id, run.provider, run.created_at.timestamp(), run.status, run.step.value, doc,
                        mode=mode)

    def _parse(self, run_id: str, doc: str) -> Any:
        """The run, or ``None`` (noted in :attr:`unreadable`) when this cloudtune cannot read it."""
        from pydantic import ValidationError

        from cloudtune.types import Run

        try:
            return Run.model_validate_json(doc)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                                 for e in exc.errors()[:3])
            item = Unreadable(run_id, problems)
        except ValueError as exc:
            item = Unreadable(run_id, f"not a JSON document ({exc})")
        self.unreadable.append(item)
        if self.on_unreadable:
            self.on_unreadable(item)
        return None

    def load_run(self, run_id: str) -> Any:
        """Exactly this run (no selector), or ``None``; an unreadable record is exit 2."""
        doc = self._read_run(run_id)
        if doc is None:
            return None
        run = self._parse(run_id, doc)
        if run is None:
            raise errors.InvalidInput(
                f"Run {run_id} in the state at {self.location} cannot be read by this cloudtune: "
                f"{self.unreadable[-1].reason}.",
                hint="It was probably written by a newer cloudtune: use that version for this run.")
        return run

    def get_run(self, run_id: str) -> Any:
        """The run ``run_id`` names: its exact id or a unique prefix (:mod:`cloudtune.run_selector`)."""
        from cloudtune.run_selector import select_run_id

        run = self.load_run(run_id) if run_id else None
        if run is not None:
            return run
        return self.load_run(select_run_id(run_id, self.run_ids(), where=f"the state at {self.location}"))

    def latest_run_id(self) -> str | None:
        ids = self._run_ids(limit=1)
        return ids[0] if ids else None

    def run_ids(self) -> list[str]:
        """Every run id, newest first."""
        return self._run_ids()

    def list_runs(self, limit: int = 50, older_than_s: float | None = None) -> list[Any]:
        """Newest first. A record this cloudtune cannot read is skipped and noted in
        :attr:`unreadable` (never fatal for the others)."""
        older_than = None if older_than_s is None else time.time() - older_than_s
        runs = []
        for run_id, doc in self._list_docs(older_than, limit):
            run = self._parse(run_id, doc) if doc is not None else None
            if run is not None:
                runs.append(run)
        return runs

    # ------------------------------------------------------------------ steps
    def intent(self, run_id: str, action: str, **data: Any) -> int:
        from cloudtune.secrets import redact

        return self._append_step(run_id, action, "intent", None, time.time(),
                                 json.dumps(redact(data), default=str))

    def result(self, run_id: str, action: str, intent_id: int | None, *, phase: str = "result", **data: Any) -> None:
        from cloudtune.secrets import redact

        if phase not in ("result", "error"):
            raise ValueError(f"a step's phase is intent, result or error, not {phase!r}")
        self._append_step(run_id, action, phase, intent_id, time.time(), json.dumps(redact(data), default=str))

    def pending_intents(self, run_id: str, action: str | None = None) -> list[StepRecord]:
        """Intents with no result or error recorded: their outcome is unknown."""
        history = self.history(run_id)
        answered = {r.intent_id for r in history if r.phase != "intent"}
        return [r for r in history if r.phase == "intent" and r.id not in answered and (action is None or r.action == action)]

    # ------------------------------------------------------------------ locks
    def held(self, run_id: str) -> bool:
        return run_id in self._locks

    def acquire(self, run_id: str, *, wait_s: float | None = None, command: str | None = None) -> bool:
        """Take the run's lock, waiting up to ``wait_s``; raises :class:`errors.RunLocked` naming the
        holder. Returns ``False`` when this store already held it (re-entered: nothing to release)."""
        if run_id in self._locks:
            return False
        holder = LockHolder.me(run_id, command)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not self._try_lock(holder):
            if deadline is None or time.monotonic() >= deadline:
                current = self.lock_holder(run_id)
                waited = f" (waited {wait_s:g}s)" if wait_s else ""
                raise errors.RunLocked(
                    f"Run {run_id} is being driven by another cloudtune process: "
                    f"{current.describe() if current else 'another process'}{waited}.",
                    hint="Let it finish, or pass --wait-lock SECONDS to wait for it.")
            timescale.sleep(0.2)  # the poll, on the time scale; the deadline stays real
        self._locks[run_id] = holder
        return True

    def release(self, run_id: str) -> None:
        if self._locks.pop(run_id, None) is not None:
            self._unlock(run_id)

    @contextmanager
    def lock(self, run_id: str, *, wait_s: float | None = None, command: str | None = None) -> Iterator[None]:
        taken = self.acquire(run_id, wait_s=wait_s, command=command)
        try:
            yield
        finally:
            if taken:
                self.release(run_id)

    def is_locked_elsewhere(self, run_id: str) -> bool:
        """Whether another process holds the run (a probe: takes and drops the lock at once)."""
        if run_id in self._locks:
            return False
        try:
            with self.lock(run_id):
                return False
        except errors.RunLocked:
            return True

    # ------------------------------------------------------------------ what `state show` prints
    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "location": self.location, "schema_version": self.schema_version(),
                "supported_schema_version": SCHEMA_VERSION,
                "locks": [asdict(h) | {"held": h.describe()} for h in self.lock_holders()]}


def refuse_newer(version: int, location: str) -> None:
    """A store written by a newer cloudtune is refused before anything is written to it."""
    if version > SCHEMA_VERSION:
        raise errors.StateUnusable(
            f"The state at {location} has schema version {version}; this cloudtune understands up to "
            f"{SCHEMA_VERSION} and will not read or write it.",
            hint="Upgrade cloudtune (pip install -U cloudtune) on this machine, or point CLOUDTUNE_STATE elsewhere.")


@dataclass
class StateSettings:
    """Backend settings from the URL's query (``?lease_seconds=15``)."""

    values: dict[str, str] = field(default_factory=dict)

    def number(self, name: str, default: float) -> float:
        raw = self.values.get(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise errors.ConfigError(f"State setting {name}={raw!r} is not a number.") from None
