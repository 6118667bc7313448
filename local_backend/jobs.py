"""Local fine-tuning jobs on disk: one directory per job under ``CLOUDTUNE_HOME/local/jobs``.

    <job_id>/spec.json       what to train (written once, before the worker starts)
    <job_id>/status.json     raw status, pid, metrics, error (written atomically)
    <job_id>/events.jsonl    events and metrics as JSON lines, oldest first
    <job_id>/stop            "cancel" or "pause", written by the CLI, read by the worker
    <job_id>/worker.pid      the pid the CLI started, recorded right after starting it
    <job_id>/worker.log      the worker's stdout/stderr
    <job_id>/checkpoints/    step-NNNNNNN/{adapter/, trainer_state.pt}
                             dpo_reference.pt (DPO: the base's precomputed log-probs)
    <job_id>/adapter/        the final LoRA adapter

Any process can read a job; only the worker writes status.json while it is alive,
and the CLI writes it only when the worker is gone (dead-worker detection, resume).
"""

from __future__ import annotations

import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloudtune.fsperm import private_dir
from local_backend import procs
from local_backend._files import append_jsonl, jobs_dir, read_json, read_jsonl, write_json_atomic, write_text_atomic

ACTIVE_STATUSES = frozenset({"queued", "starting", "loading", "running", "cancelling", "pausing"})
RESUMABLE_ERRORS = frozenset({"worker_died"})
WORKER_MODULE = "local_backend.worker"
# A job recorded as queued with no worker pid after this long was never started (crash mid-create).
_SPAWN_GRACE_S = 60.0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_job_id() -> str:
    return "ftjob-local-" + secrets.token_hex(6)


class JobDir:
    def __init__(self, job_id: str) -> None:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise KeyError(job_id)
        self.job_id = job_id
        self.path = jobs_dir() / job_id

    @classmethod
    def all(cls) -> list["JobDir"]:
        if not jobs_dir().is_dir():
            return []
        return [cls(p.name) for p in jobs_dir().iterdir() if (p / "spec.json").is_file()]

    def exists(self) -> bool:
        return (self.path / "spec.json").is_file()

    # files ---------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.path / "spec.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def stop_path(self) -> Path:
        return self.path / "stop"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def spec(self) -> dict[str, Any]:
        return read_json(self.spec_path, {})

    def raw_status(self) -> dict[str, Any]:
        return read_json(self.status_path, {}) or {}

    def write_status(self, **changes: Any) -> dict[str, Any]:
        status = self.raw_status()
        status.update(changes, updated_at=now_iso())
        write_json_atomic(self.status_path, status)
        return status

    def worker_pid(self) -> int | None:
        try:
            return int((self.path / "worker.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    # events ---------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path)

    def next_event_number(self) -> int:
        events = self.events()
        return (int(events[-1]["id"].rsplit("-", 1)[-1]) + 1) if events else 1

    def add_event(self, number: int, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        append_jsonl(
            self.events_path,
            {"id": f"ev-{number:08d}", "created_at": now_iso(), "level": level, "message": message, "data": data or {}},
        )

    # lifecycle ------------------------------------------------------------
    def create(self, spec: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.path)  # the job's data and adapter are the user's: owner-only whatever the umask
        write_json_atomic(self.spec_path, spec)
        write_json_atomic(
            self.status_path, {"status": "queued", "created_at": spec["created_at"], "attempt": 0, "updated_at": now_iso()}
        )
        self.add_event(1, "info", "Job created", {"status": "queued"})

    def start_worker(self) -> int:
        if self.worker_holds_lock():  # one worker per job: never a second over the first one's files
            return self.worker_pid() or 0
        self.stop_path.unlink(missing_ok=True)
        pid = procs.spawn_detached(WORKER_MODULE, str(self.path), log_path=self.path / "worker.log", cwd=self.path)
        (self.path / "worker.pid").write_text(str(pid))
        return pid

    def worker_holds_lock(self) -> bool:
        """The worker holds an exclusive lock on ``worker.lock`` for its whole life; the kernel
        drops it when the process ends however it ends, so this is the liveness test to trust."""
        import fcntl

        try:
            handle = open(self.path / "worker.lock", "a")  # noqa: SIM115
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def worker_alive(self) -> bool:
        return self.worker_holds_lock() or procs.pid_alive(self.worker_pid(), expect=str(self.path))

    def current_status(self) -> dict[str, Any]:
        """status.json, corrected for a worker that is gone: an active status whose worker
        no longer runs becomes ``failed`` (reason ``worker_died``, resumable)."""
        status = self.raw_status()
        raw = status.get("status")
        if raw not in ACTIVE_STATUSES:
            return status
        pid = self.worker_pid()
        created = status.get("updated_at") or status.get("created_at")
        age = time.time() - datetime.fromisoformat(created).timestamp() if created else 0
        if pid is None:
            if age < _SPAWN_GRACE_S:
                return status
        elif self.worker_alive():
            return status
        elif procs.pid_exists(pid) and age < _SPAWN_GRACE_S:
            # a worker caught while starting (its command line not yet the worker's, seen under
            # heavy load): alive. A pid reused by another program is only assumed after the grace.
            return status
        if raw == "cancelling":  # the worker died while asked to stop: that is a cancel
            status = self.write_status(status="cancelled", finished_at=now_iso(), pid=None)
            return status
        log_tail = _tail(self.path / "worker.log")
        reason = "the training worker process is gone (killed, crashed or the machine restarted)"
        status = self.write_status(
            status="failed",
            finished_at=now_iso(),
            error={"code": "worker_died", "message": f"{reason}; resume it to continue from the last checkpoint"},
            resumable=True,
            log_tail=log_tail,
        )
        self.add_event(self.next_event_number(), "error", f"Worker died: {reason}", {"status": "failed"})
        return status

    def request_stop(self, what: str) -> None:
        # Renamed into place: the worker reads this file between steps, and a plain write_text
        # (truncate, then write) let it read an empty file and cancel a job that was being paused.
        write_text_atomic(self.stop_path, what)

    def checkpoints(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step-*") if (p / "trainer_state.pt").is_file())

    def delete_outputs(self) -> None:
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
        shutil.rmtree(self.checkpoints_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
