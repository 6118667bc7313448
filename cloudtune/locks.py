"""One driver per run: an exclusive OS file lock per run id.

Like Terraform's state lock (and the local worker's lock), the lock is an ``flock`` on a file
under ``CLOUDTUNE_HOME/locks``: held for the whole command, dropped by the kernel when the
process dies in any way (``kill -9`` included), so a crashed command never leaves a stale
lock behind. The holder writes its pid and command line into the file so a second command
can say who holds the run. Every command that changes a run (run, resume, cleanup, deploy,
undeploy, cancel, pause, delete-model of a run) takes it; ledger writes of the run happen
under it, so no writer loses another's record.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from cloudtune import errors

_HELD: dict[str, "RunLock"] = {}  # run ids this process holds (re-entrant within one process)


def _locks_dir() -> Path:
    from cloudtune.ledger import cloudtune_home

    path = cloudtune_home() / "locks"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


class RunLock:
    """``with RunLock(run_id, wait_s=None):`` - raises :class:`errors.RunLocked` when another
    process holds the run and ``wait_s`` is ``None`` (or runs out)."""

    def __init__(self, run_id: str, *, wait_s: float | None = None, command: str | None = None) -> None:
        self.run_id = run_id
        self.wait_s = wait_s
        self.command = command or " ".join(["cloudtune", *sys.argv[1:3]])
        self.path = _locks_dir() / f"{run_id}.lock"
        self._fd: int | None = None
        self._reentered = False

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> "RunLock":
        if self.run_id in _HELD:
            self._reentered = True
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    waited = f" (waited {self.wait_s:g}s)" if self.wait_s else ""
                    raise errors.RunLocked(
                        f"Run {self.run_id} is being driven by another cloudtune process: {holder}{waited}.",
                        hint="Let it finish, or pass --wait-lock SECONDS to wait for it.",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({self.command})".encode())
        self._fd = fd
        _HELD[self.run_id] = self
        return self

    def release(self) -> None:
        if self._reentered or self._fd is None:
            return
        _HELD.pop(self.run_id, None)
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def held(run_id: str) -> bool:
    """Whether this process holds ``run_id``'s lock."""
    return run_id in _HELD


def is_locked_elsewhere(run_id: str) -> bool:
    """Whether another process holds the run (a probe: takes and drops the lock at once)."""
    if run_id in _HELD:
        return False
    try:
        with RunLock(run_id):
            return False
    except errors.RunLocked:
        return True
