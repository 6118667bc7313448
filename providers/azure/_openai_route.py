"""Azure OpenAI route: files and fine-tuning jobs through ``openai.AzureOpenAI``; deployments
through Azure Resource Manager (Microsoft.CognitiveServices), chat through the deployment."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.types import (
    ChatResult,
    Checkpoint,
    Deployment,
    DeploymentState,
    DeployOptions,
    FineTuneSpec,
    Job,
    JobError,
    JobEvent,
)
from providers.azure._settings import CLOUDTUNE_TAG, COGNITIVE_SCOPE, CS_API_VERSION, RUN_TAG, ArmClient, Settings
from providers.openai import fine_tuning
from providers.openai.convert import to_chat_result

DEPLOYMENT_STATES = {
    "accepted": DeploymentState.CREATING, "creating": DeploymentState.CREATING, "updating": DeploymentState.CREATING,
    "moving": DeploymentState.CREATING, "succeeded": DeploymentState.READY, "failed": DeploymentState.FAILED,
    "canceled": DeploymentState.FAILED, "deleting": DeploymentState.DELETING,
}
SKUS = ("Standard", "GlobalStandard", "Developer")


def when(value: Any) -> datetime | None:
    if value in (None, 0):
        return None  # Azure returns null (and sometimes 0) for what has not happened yet
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


class OpenAIRoute:
    name = "openai"

    def __init__(self, settings: Settings, map_status: Callable[[str | None], Any], sleep: Callable[[float], None]) -> None:
        self.settings = settings
        self.map_status = map_status
        self.sleep = sleep
        self._client: Any = None
        self._arm: ArmClient | None = None

    # ---------------------------------------------------------------- clients
    @property
    def client(self) -> Any:
        if self._client is None:
            import os

            from openai import AzureOpenAI

            key = os.environ.get("AZURE_OPENAI_API_KEY")
            auth: dict[str, Any]
            if key:
                auth = {"api_key": key}
            else:
                from azure.identity import get_bearer_token_provider

                auth = {"azure_ad_token_provider": get_bearer_token_provider(self.settings.credential(), COGNITIVE_SCOPE)}
            self._client = AzureOpenAI(azure_endpoint=self.settings.endpoint, api_version=self.settings.api_version,
                                       max_retries=3, **auth)
        return self._client

    @property
    def arm(self) -> ArmClient:
        if self._arm is None:
            self._arm = ArmClient(self.settings)
        return self._arm

    def _deployments_path(self, name: str | None = None) -> str:
        s = self.settings
        base = (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}/providers/"
                f"Microsoft.CognitiveServices/accounts/{s.account}/deployments")
        return f"{base}/{name}" if name else base

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._arm is not None:
            self._arm.close()

    def check(self) -> dict[str, Any]:
        self.settings.credential().get_token(COGNITIVE_SCOPE)
        account = self.arm.request("GET", self._deployments_path().rsplit("/deployments", 1)[0], CS_API_VERSION)
        return {"route": "openai", "endpoint": self.settings.endpoint, "account": self.settings.account,
                "region": account.get("location")}

    # ----------------------------------------------------------------- files
    def find_uploaded(self, path: Path, since: float) -> str | None:
        from itertools import islice

        from providers.openai.fine_tuning import uploaded_file_matching

        files = list(islice(self.client.files.list(purpose="fine-tune"), 1000))
        return uploaded_file_matching(files, filename=path.name, size=path.stat().st_size, since=since)

    def upload_file(self, path: Path, progress: Callable[[int, int], None] | None) -> str:
        size = path.stat().st_size
        with path.open("rb") as handle:
            created = self.client.files.create(file=(path.name, handle), purpose="fine-tune")
        # Azure imports the file before a job may use it: wait for ``processed``.
        status, waited = created.status, 0.0
        while status not in ("processed", "error", "deleted") and waited < 600:
            self.sleep(1.0)
            waited += 1.0
            status = self.client.files.retrieve(created.id).status
        if status == "error":
            raise errors.DatasetError(f"Azure OpenAI could not import {path.name}.", provider="azure")
        if progress is not None:
            progress(size, size)
        return created.id

    def delete_file(self, file_id: str) -> None:
        self.client.files.delete(file_id)

    # ------------------------------------------------------------------ jobs
    def create_job(self, spec: FineTuneSpec, training_file_id: str, validation_file_id: str | None, run_id: str) -> Job:
        hp = spec.hyperparameters
        hyper = {k: v for k, v in {"n_epochs": hp.epochs, "batch_size": hp.batch_size,
                                   "learning_rate_multiplier": hp.learning_rate_multiplier}.items() if v is not None}
        method: dict[str, Any] = {"type": spec.method.value}
        method[spec.method.value] = {"hyperparameters": hyper | ({"beta": hp.beta} if hp.beta and spec.method.value == "dpo" else {})}
        kwargs: dict[str, Any] = {"model": spec.base_model, "training_file": training_file_id, "method": method,
                                  "metadata": {**spec.metadata, RUN_TAG: run_id}}
        kwargs.update(fine_tuning.optional_job_fields(spec, validation_file_id))
        # No SDK retries: a retried POST could create a second job (the pipeline uses find_jobs).
        raw = self.client.with_options(max_retries=0).fine_tuning.jobs.create(**kwargs)
        return self.to_job(raw)

    def find_jobs(self, run_id: str) -> list[Job]:
        found = []
        for raw in self.client.fine_tuning.jobs.list(limit=100, metadata={RUN_TAG: run_id}):
            if (_get(raw, "metadata") or {}).get(RUN_TAG) == run_id:  # filter again: not every api-version filters
                found.append(self.to_job(raw))
        return sorted(found, key=lambda j: j.created_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)

    def get_job(self, job_id: str) -> Job:
        return self.to_job(self.client.fine_tuning.jobs.retrieve(job_id))

    def list_jobs(self, limit: int) -> list[Job]:
        return [self.to_job(raw) for raw in self.client.fine_tuning.jobs.list(limit=limit).data[:limit]]

    def cancel_job(self, job_id: str) -> Job:
        return self.to_job(self.client.fine_tuning.jobs.cancel(job_id))

    def list_events(self, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        # Same paging as OpenAI's; retries are the AzureOpenAI client's own (max_retries=3).
        newer = fine_tuning.events_after(lambda kwargs: self.client.fine_tuning.jobs.list_events(job_id, **kwargs),
                                         after, limit)
        return [JobEvent(id=raw.id, created_at=when(raw.created_at) or datetime.now(timezone.utc),
                         level=raw.level or "info", message=raw.message or "",
                         data=dict(_get(raw, "data") or {})) for raw in newer]

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        out = []
        for raw in self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100):
            metrics = {k: float(v) for k, v in dict(_get(raw, "metrics") or {}).items() if isinstance(v, (int, float))}
            out.append(Checkpoint(id=raw.id, job_id=job_id, step=_get(raw, "step_number"), created_at=when(raw.created_at),
                                  model=_get(raw, "fine_tuned_model_checkpoint"), metrics=metrics))
        return out

    def to_job(self, raw: Any) -> Job:
        error = _get(raw, "error")
        message = _get(error, "message") if error else None
        code = _get(error, "code") if error else None
        return Job(
            id=raw.id, provider="azure", state=self.map_status(raw.status), provider_status=raw.status,
            base_model=raw.model, fine_tuned_model=_get(raw, "fine_tuned_model") or None,
            created_at=when(raw.created_at), finished_at=when(_get(raw, "finished_at")),
            trained_tokens=_get(raw, "trained_tokens"), metadata=dict(_get(raw, "metadata") or {}),
            error=JobError(code=code, message=message or str(code), param=_get(error, "param")) if (message or code) else None,
            estimated_finish=when(_get(raw, "estimated_finish")),
        )

    # ----------------------------------------------------------- deployments
    def deploy(self, model: str, name: str, options: DeployOptions | None, default_sku: str | None) -> Deployment:
        sku = (options.sku if options and options.sku else None) or default_sku or "Standard"
        if sku not in SKUS:
            raise errors.ConfigError(f"Unknown deployment sku {sku!r} for Azure OpenAI; use one of {', '.join(SKUS)}.")
        from azure.core.exceptions import ResourceNotFoundError

        try:
            existing = self.get_deployment(name)
        except ResourceNotFoundError:
            existing = None
        if existing is not None:
            if existing.model == model and existing.state != DeploymentState.DELETING:
                return existing  # idempotent: resume re-sends deploy
            raise errors.Conflict(f"Deployment name {name!r} is taken (model {existing.model}, {existing.state}).",
                                  hint="Pick another deployment name.")
        body = {"sku": {"name": sku, "capacity": (options.capacity if options and options.capacity else 1)},
                "tags": {CLOUDTUNE_TAG[0]: CLOUDTUNE_TAG[1]},
                "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}}}
        return self._to_deployment(self.arm.request("PUT", self._deployments_path(name), CS_API_VERSION, body))

    def get_deployment(self, name: str) -> Deployment:
        return self._to_deployment(self.arm.request("GET", self._deployments_path(name), CS_API_VERSION))

    def list_deployments(self, model: str | None) -> list[Deployment]:
        listed = self.arm.request("GET", self._deployments_path(), CS_API_VERSION) or {}
        deployments = [self._to_deployment(item) for item in listed.get("value", [])]
        return [d for d in deployments if model is None or d.model == model]

    def undeploy(self, name: str) -> None:
        self.arm.request("DELETE", self._deployments_path(name), CS_API_VERSION)

    def delete_model(self, model: str) -> None:
        self.client.models.delete(model)

    def _to_deployment(self, raw: Mapping[str, Any]) -> Deployment:
        props = raw.get("properties") or {}
        status = props.get("provisioningState")
        tags = raw.get("tags") or {}
        sku = raw.get("sku") or {}
        return Deployment(
            name=raw["name"], model=(props.get("model") or {}).get("name") or "",
            state=DEPLOYMENT_STATES.get(str(status).lower(), DeploymentState.CREATING), provider_status=status,
            endpoint_url=f"{self.settings.endpoint}/openai/deployments/{raw['name']}/chat/completions",
            managed_by_cloudtune=tags.get(CLOUDTUNE_TAG[0]) == CLOUDTUNE_TAG[1],
            details={"route": "openai", "sku": sku.get("name"), "capacity": sku.get("capacity"),
                     "account": self.settings.account},
        )

    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], params: dict[str, Any]) -> ChatResult:
        started = time.monotonic()
        raw = self.client.chat.completions.create(model=deployment, messages=list(messages), **params)
        return to_chat_result(raw, latency_s=time.monotonic() - started)
