"""A small provider for the core tests: all state in memory, or in a JSON file
(``options["state_file"]`` / ``CLOUDTUNE_MEMORY_STATE``) so that the CLI tests
can drive it across processes, ``kill -9`` included.

A job advances one stage per ``get_job`` call: validating -> queued -> running
(``steps`` metric events) -> succeeded, unless ``fail`` names a stage. It
mimics a hosted service: raw statuses of its own, events newest first
internally, a model that cannot be deleted while deployed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.provider import Provider
from cloudtune.provider_facts import Operation
from cloudtune.types import (
    ChatResult,
    Checkpoint,
    CheckResult,
    Deployment,
    DeploymentState,
    JobEvent,
    Job,
    JobError,
    JobState,
    RemoteFile,
)

_STAGES = ["validating_files", "queued", "running", "succeeded"]


class MemoryProvider(Provider):
    name = "memory"
    status_map = {
        "validating_files": JobState.VALIDATING,
        "queued": JobState.QUEUED,
        "running": JobState.RUNNING,
        "succeeded": JobState.SUCCEEDED,
        "failed": JobState.FAILED,
        "cancelled": JobState.CANCELLED,
    }
    unsupported = {Operation.PAUSE_JOB: "the memory provider has no pause",
                   Operation.RESUME_JOB: "the memory provider has no pause"}
    option_names = {
        "state_file": "JSON file holding the provider's state across processes (or CLOUDTUNE_MEMORY_STATE)",
        "steps": "training steps a job reports (or CLOUDTUNE_MEMORY_STEPS)",
        "fail": "the stage at which jobs fail (or CLOUDTUNE_MEMORY_FAIL)",
    }

    def __init__(self, options: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        path = self.options.get("state_file") or os.environ.get("CLOUDTUNE_MEMORY_STATE")
        self.state_file = Path(path) if path else None
        self._memory: dict[str, Any] = {"files": {}, "jobs": {}, "models": [], "deployments": {}, "calls": []}
        self.running_steps = int(self.options.get("steps", os.environ.get("CLOUDTUNE_MEMORY_STEPS", 3)))
        self.fail_stage = self.options.get("fail") or os.environ.get("CLOUDTUNE_MEMORY_FAIL")

    # ------------------------------------------------------------ state
    @contextmanager
    def _state(self):  # type: ignore[no-untyped-def]
        if self.state_file is None:
            yield self._memory
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self.state_file) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.state_file.read_text()) if self.state_file.exists() else dict(self._memory)
            yield state
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_file)
        self._after_call()

    def _after_call(self) -> None:
        if getattr(self, "_hang", False):
            self._hang = False
            Path(str(self.state_file) + ".hanging").write_text(str(os.getpid()))
            time.sleep(3600)
        kind = getattr(self, "_raise", None)
        if kind:
            self._raise = None
            raise {
                "auth": errors.AuthError("memory: the API key was refused", hint="check MEMORY_API_KEY"),
                "quota": errors.QuotaExceeded("memory: quota exhausted"),
                "transient": errors.TransientError("memory: connection reset", retry_after=0),
                "conflict": errors.Conflict("memory: conflict"),
            }[kind]

    def _log(self, state: dict[str, Any], call: str) -> None:
        state["calls"].append(call)
        operation = call.split()[0]
        # Test hooks, driven by environment variables so they reach a CLI subprocess:
        # HANG=<operation> makes the provider stop answering right after it performed that
        # operation (the request went out, the answer never comes back), once per state file.
        if os.environ.get("CLOUDTUNE_MEMORY_HANG") == operation and not state.get("hung"):
            state["hung"] = True
            self._hang = True
        # RAISE=<operation>:<auth|quota|transient|conflict> makes that operation fail, once.
        raise_spec = os.environ.get("CLOUDTUNE_MEMORY_RAISE", "")
        if raise_spec.split(":")[0] == operation and not state.get("raised"):
            state["raised"] = True
            self._raise = raise_spec.split(":")[1]

    # --------------------------------------------------------- interface
    def check(self) -> CheckResult:
        return CheckResult(provider=self.name, sdk_installed=True, credentials_found=True, ok=True)

    def upload_file(self, path: Path, *, purpose: str = "fine-tune", progress: Any = None) -> str:
        with self._state() as state:
            file_id = "file-" + uuid.uuid4().hex[:12]
            state["files"][file_id] = {"name": Path(path).name, "bytes": Path(path).stat().st_size, "at": time.time()}
            self._log(state, f"upload_file {file_id}")
            return file_id

    def find_uploaded(self, path: Path, *, since: float) -> str | None:
        with self._state() as state:
            size = Path(path).stat().st_size
            found = [(f["at"], fid) for fid, f in state["files"].items()
                     if f["name"] == Path(path).name and f["bytes"] == size and f["at"] >= since - 1]
            return max(found)[1] if found else None

    def get_file(self, file_id: str) -> RemoteFile:
        with self._state() as state:
            found = state["files"].get(file_id)
            if found is None:
                raise errors.NotFound(f"no file {file_id}")
            return RemoteFile(id=file_id, name=found["name"], bytes=found["bytes"])

    def delete_file(self, file_id: str) -> None:
        with self._state() as state:
            self._log(state, f"delete_file {file_id}")
            if state["files"].pop(file_id, None) is None:
                raise errors.NotFound(f"no file {file_id}")

    def create_job(self, spec, *, training_file_id, validation_file_id, run_id):  # type: ignore[no-untyped-def]
        with self._state() as state:
            if training_file_id not in state["files"]:
                raise errors.InvalidInput(f"training file {training_file_id} does not exist")
            job_id = "ftjob-" + uuid.uuid4().hex[:12]
            state["jobs"][job_id] = {
                "status": "validating_files", "base": spec.base_model, "metadata": {**spec.metadata, "cloudtune_run_id": run_id},
                "created": time.time(), "events": [], "step": 0, "model": None, "error": None, "forced": None,
            }
            self._event(state["jobs"][job_id], "Validating training file")
            self._log(state, f"create_job {job_id}")
            return self._job(job_id, state["jobs"][job_id])

    def find_jobs(self, run_id: str) -> list[Job]:
        with self._state() as state:
            found = [(j["created"], jid) for jid, j in state["jobs"].items() if j["metadata"].get("cloudtune_run_id") == run_id]
            return [self._job(jid, state["jobs"][jid]) for _, jid in sorted(found, reverse=True)]

    def list_jobs(self, limit: int = 20) -> list[Job]:
        with self._state() as state:
            return [self._job(jid, j) for jid, j in list(state["jobs"].items())[-limit:]]

    def get_job(self, job_id: str) -> Job:
        with self._state() as state:
            job = self._get(state, job_id)
            self._advance(state, job)
            self._log(state, f"get_job {job_id}")
            return self._job(job_id, job)

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        with self._state() as state:
            job = self._get(state, job_id)
            self._advance(state, job)  # the job moves on whoever looks at it
            events = job["events"]  # oldest first
            start = 0
            if after is not None:
                ids = [e["id"] for e in events]
                start = ids.index(after) + 1 if after in ids else 0
            return [JobEvent(**e) for e in events[start : start + limit]]

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self._state() as state:
            job = self._get(state, job_id)
            return [Checkpoint(id=f"{job_id}-ckpt-{s}", job_id=job_id, step=s) for s in range(1, job["step"] + 1)]

    def cancel_job(self, job_id: str) -> Job:
        with self._state() as state:
            job = self._get(state, job_id)
            self._log(state, f"cancel_job {job_id}")
            if job["status"] not in ("succeeded", "failed", "cancelled"):
                job["status"] = "cancelled"
                job["forced"] = None
                self._event(job, "Job cancelled")
            return self._job(job_id, job)

    def deploy(self, model, *, name, options=None, run_id=None):  # type: ignore[no-untyped-def]
        with self._state() as state:
            if model not in state["models"]:
                raise errors.NotFound(f"no model {model}")
            existing = state["deployments"].get(name)
            if existing and existing["model"] != model:
                raise errors.Conflict(f"deployment {name} already serves {existing['model']}")
            state["deployments"].setdefault(name, {"model": model, "polls": 0, "managed": True, "run_id": run_id})
            self._log(state, f"deploy {name}")
            return self._deployment(name, state["deployments"][name])

    def get_deployment(self, name: str) -> Deployment:
        with self._state() as state:
            found = state["deployments"].get(name)
            if found is None:
                raise errors.NotFound(f"no deployment {name}")
            found["polls"] += 1
            return self._deployment(name, found)

    def list_deployments(self, model: str | None = None) -> list[Deployment]:
        with self._state() as state:
            return [
                self._deployment(n, d) for n, d in state["deployments"].items() if model is None or d["model"] == model
            ]

    def undeploy(self, name: str) -> None:
        with self._state() as state:
            self._log(state, f"undeploy {name}")
            if state["deployments"].pop(name, None) is None:
                raise errors.NotFound(f"no deployment {name}")

    def delete_model(self, model: str) -> None:
        with self._state() as state:
            self._log(state, f"delete_model {model}")
            if model not in state["models"]:
                raise errors.NotFound(f"no model {model}")
            users = [n for n, d in state["deployments"].items() if d["model"] == model]
            if users:
                raise errors.Conflict(f"model {model} is still deployed as {', '.join(users)}")
            state["models"].remove(model)

    def chat(self, deployment, messages, **params):  # type: ignore[no-untyped-def]
        with self._state() as state:
            found = state["deployments"].get(deployment)
            if found is None:
                raise errors.NotFound(f"no deployment {deployment}")
            last = str(messages[-1].get("content", ""))
            self._log(state, f"chat {deployment}")
            return ChatResult(content=f"[{found['model']}] {last[::-1]}", model=found["model"])

    # ---------------------------------------------------------- helpers
    def force(self, job_id: str, raw_status: str) -> None:
        with self._state() as state:
            self._get(state, job_id)["forced"] = raw_status

    def model_exists(self, model: str) -> bool:
        with self._state() as state:
            return model in state["models"]

    def calls(self) -> list[str]:
        with self._state() as state:
            return list(state["calls"])

    def _get(self, state: dict[str, Any], job_id: str) -> dict[str, Any]:
        job = state["jobs"].get(job_id)
        if job is None:
            raise errors.NotFound(f"no fine-tuning job {job_id}")
        return job

    def _event(self, job: dict[str, Any], message: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
        n = len(job["events"])
        job["events"].append(
            {"id": f"ev-{n:04d}", "created_at": job["created"] + n, "level": level, "message": message, "data": data or {}}
        )

    def _advance(self, state: dict[str, Any], job: dict[str, Any]) -> None:
        status = job["status"]
        if status in ("succeeded", "failed", "cancelled") or job["forced"]:
            return
        if self.fail_stage == status:
            job["status"] = "failed"
            job["error"] = {"code": "invalid_training_file", "message": "Invalid file format on line 3", "line": 3}
            self._event(job, "Training file validation failed on line 3", level="error")
            return
        if status == "running" and job["step"] < self.running_steps:
            job["step"] += 1
            loss = 2.0 / job["step"]
            self._event(job, f"Step {job['step']}/{self.running_steps}: training loss={loss:.3f}",
                        {"type": "metrics", "step": job["step"], "train_loss": loss, "total_steps": self.running_steps})
            return
        following = _STAGES[_STAGES.index(status) + 1]
        job["status"] = following
        if following == "succeeded":
            job["model"] = f"ft:{job['base']}:memory:{uuid.uuid4().hex[:6]}"
            state["models"].append(job["model"])
        self._event(job, f"Job {following}")

    def _job(self, job_id: str, job: dict[str, Any]) -> Job:
        return Job(
            id=job_id,
            provider=self.name,
            state=self.map_status(job["forced"] or job["status"]),
            provider_status=job["forced"] or job["status"],
            base_model=job["base"],
            fine_tuned_model=job["model"],
            created_at=job["created"],
            error=JobError(**job["error"]) if job["error"] else None,
            metrics={"step": job["step"], "total_steps": self.running_steps} if job["step"] else {},
            metadata=job["metadata"],
        )

    def _deployment(self, name: str, d: dict[str, Any]) -> Deployment:
        # a deployment needs one look before it is ready, like real ones
        state = DeploymentState.READY if d["polls"] >= 1 else DeploymentState.CREATING
        return Deployment(name=name, model=d["model"], state=state, managed_by_cloudtune=d.get("managed", True),
                          run_id=d.get("run_id"))
