"""One driver per run: the run's lock, held for the whole command.

Like Terraform's state lock, the lock lives with the state (:mod:`cloudtune.state`): an ``flock``
beside the SQLite ledger, a PostgreSQL session advisory lock, or an Azure blob lease. Each is
dropped when its holder dies in any way (``kill -9`` included: the kernel closes the file, the
database ends the session, the lease is no longer renewed), so a crashed command never leaves a
lock behind for long. The holder records who it is (host, pid, command, since) so a second
command can say who holds the run. Every command that changes a run (run, resume, cleanup,
deploy, undeploy, cancel, pause, delete-model of a run) takes it; state writes of the run happen
under it, so no writer loses another's record.
"""

from __future__ import annotations

from types import TracebackType

from cloudtune import errors  # noqa: F401 - RunLocked is raised through the store
from cloudtune.state import StateStore, open_state


class RunLock:
    """``with RunLock(run_id, wait_s=None):`` - raises :class:`errors.RunLocked` when another
    process holds the run and ``wait_s`` is ``None`` (or runs out)."""

    def __init__(self, run_id: str, *, wait_s: float | None = None, command: str | None = None,
                 store: StateStore | None = None) -> None:
        self.run_id = run_id
        self.wait_s = wait_s
        self.command = command
        self.store = store or open_state()
        self._taken = False

    def holder(self) -> str:
        holder = self.store.lock_holder(self.run_id)
        return holder.describe() if holder else "another process"

    def acquire(self) -> "RunLock":
        self._taken = self.store.acquire(self.run_id, wait_s=self.wait_s, command=self.command)
        return self

    def release(self) -> None:
        if self._taken:
            self._taken = False
            self.store.release(self.run_id)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def held(run_id: str) -> bool:
    """Whether this process holds ``run_id``'s lock."""
    return open_state().held(run_id)


def is_locked_elsewhere(run_id: str) -> bool:
    """Whether another process holds the run (a probe: takes and drops the lock at once)."""
    return open_state().is_locked_elsewhere(run_id)
