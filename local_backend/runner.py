"""Running one training job in this process: the job's status.json while it runs, its events
as they happen, and stop requests (cancel / pause, or SIGTERM) honoured by saving a checkpoint
and leaving. The process entry that starts it is :mod:`local_backend.worker`; a rank of a
distributed job runs a subclass (:mod:`local_backend.launch`).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

from local_backend.jobs import JobDir, now_iso


class JobRunner:
    def __init__(self, job_dir: Path) -> None:
        self.job = JobDir(job_dir.name)
        if self.job.path.resolve() != job_dir.resolve():
            # Not under this process's CLOUDTUNE_HOME: address the directory directly.
            self.job.path = job_dir
        self.event_number = self.job.next_event_number()
        self.signalled: str | None = None

    def event(self, level: str, message: str, data: dict | None = None) -> None:
        self.job.add_event(self.event_number, level, message, data or {})
        self.event_number += 1

    def stop_requested(self) -> str | None:
        if self.signalled:
            return self.signalled
        try:
            what = self.job.stop_path.read_text().strip()
        except FileNotFoundError:
            return None
        if not what:  # a writer that did not rename into place is mid-write: ask again at the next step
            return None
        return what if what in ("cancel", "pause") else "cancel"

    def on_trainer_event(self, level: str, message: str, data: dict) -> None:
        self.event(level, message, data)
        if data.get("kind") == "metrics":
            metrics = {k: v for k, v in data.items() if isinstance(v, (int, float)) and k != "kind"}
            status = self.job.raw_status()
            merged = {**status.get("metrics", {}), **metrics}
            self.job.write_status(metrics=merged, trained_tokens=int(data.get("trained_tokens", status.get("trained_tokens") or 0)))

    def run(self) -> int:
        from local_backend.trainer import Stopped, TrainConfig

        spec = self.job.spec()
        status = self.job.raw_status()
        attempt = int(status.get("attempt", 0)) + 1
        self.job.write_status(status="loading", pid=os.getpid(), attempt=attempt, started_at=now_iso(), error=None)
        self.event("info", "Worker started" + (f" (attempt {attempt}, resuming)" if attempt > 1 else ""), {"status": "loading", "pid": os.getpid()})
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            import torch

            if spec.get("torch_threads"):
                torch.set_num_threads(int(spec["torch_threads"]))
            config = TrainConfig.from_dict(spec["train_config"])
            trainer = self.make_trainer(config)
            trainer.setup()
            stop = trainer.parallel.agree(self.stop_requested())  # every rank of a distributed job decides alike
            if stop:
                raise Stopped(stop)
            self.job.write_status(status="running", total_steps=trainer.total_steps, truncated=trainer.encode_stats.truncated)
            self.event("info", "Training started", {"status": "running", "total_steps": trainer.total_steps})
            result = trainer.train(resume=True)
        except Stopped as stopped:
            final = "paused" if stopped.reason == "pause" else "cancelled"
            self.job.write_status(status=final, finished_at=now_iso() if final == "cancelled" else None, pid=None)
            self.event("info", f"Job {final}; state saved", {"status": final})
            return 0
        except BaseException as exc:  # noqa: BLE001 - every failure must land in status.json
            print(traceback.format_exc(), file=sys.stderr)
            self.record_failure(exc)
            return 1
        self.job.write_status(
            status="succeeded",
            finished_at=now_iso(),
            pid=None,
            trained_tokens=result.trained_tokens,
            fine_tuned_model=spec.get("fine_tuned_model"),
        )
        self.event(
            "info",
            f"Training finished: {result.steps} steps, final loss {result.train_loss:.4f}"
            + (f", validation loss {result.valid_loss:.4f}" if result.valid_loss is not None else ""),
            {"status": "succeeded", "steps": result.steps},
        )
        return 0

    def make_trainer(self, config, **kwargs):  # noqa: ANN001, ANN003, ANN201 - local_backend.trainer types
        """The job's trainer; a rank of a distributed job (local_backend/launch.py) adds its peers."""
        from local_backend.trainer import Trainer

        return Trainer(config, self.job.path, on_event=self.on_trainer_event, should_stop=self.stop_requested, **kwargs)

    def record_failure(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        code = getattr(exc, "code", None) or type(exc).__name__
        self.job.write_status(status="failed", finished_at=now_iso(), error={"code": str(code), "message": message}, pid=None)
        self.event("error", f"Training failed: {message}", {"status": "failed"})

    def _on_sigterm(self, signum, frame) -> None:  # noqa: ANN001 - signal handler signature
        # A polite kill (shutdown, `kill PID`): save at the next step boundary and stop, resumable.
        self.signalled = "pause"
