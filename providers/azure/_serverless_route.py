"""Serverless route: catalog models (Phi-3 / Phi-4, ...) fine-tuned in a hub-based Azure AI Foundry
project with ``azure-ai-ml``, served by a serverless endpoint.

Ids this route hands out:

* file id: ``azureml:<data asset name>:<version>`` (a data asset; content-addressed name)
* job id: the job name (``ctft-...``)
* fine-tuned model: ``azureml:<model name>:<version>`` (the job's registered output model)
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloudtune import errors, listing
from cloudtune.types import ChatResult, Deployment, DeploymentState, FineTuneSpec, Job, JobEvent
from cloudtune.service_facts import azure_serverless
from providers.azure._capabilities import catalog_model_uri, model_name, retired_refusal, serverless_model
from providers.azure._openai_route import DEPLOYMENT_RUN_TAG, with_run_id
from providers.azure._sdk_retries import openai_client, retry_policy
from providers.azure._settings import CLOUDTUNE_TAG, ML_API_VERSION, RUN_TAG, ArmClient, Settings

ENDPOINT_STATES = {
    "creating": DeploymentState.CREATING, "updating": DeploymentState.CREATING, "accepted": DeploymentState.CREATING,
    "succeeded": DeploymentState.READY, "failed": DeploymentState.FAILED, "canceled": DeploymentState.FAILED,
    "deleting": DeploymentState.DELETING,
}
# The order a healthy Azure ML job walks through; events are derived from it (azure-ai-ml has no
# event feed for fine-tuning jobs), one per status reached.
_PROGRESS = ("NotStarted", "Queued", "Running")
_TERMINAL = ("Completed", "Failed", "Canceled")
FILE_NAME_TAG = "cloudtune-file"  # the uploaded file's name, kept on its data asset (the run tag)
DEFAULT_LEARNING_RATE = 2e-5  # base learning rate the multiplier scales (documented in the README)


def _text(value: Any) -> str | None:
    """SDK enums (``JobStatus.NOT_STARTED``) -> their wire string (``NotStarted``)."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def parse_asset(asset_id: str) -> tuple[str, str]:
    """'azureml:name:3' -> ('name', '3'); a bare name means version 1."""
    body = asset_id[len("azureml:"):] if asset_id.startswith("azureml:") else asset_id
    name, _, version = body.partition(":")
    return name, version or "1"


class ServerlessRoute:
    name = "serverless"

    def __init__(self, settings: Settings, map_status: Callable[[str | None], Any], base_model: str | None) -> None:
        self.settings = settings
        self.map_status = map_status
        self.base_model = base_model
        self._ml: Any = None
        self._arm: ArmClient | None = None
        self._preflight_done: set[str] = set()
        self._versioned: dict[str, str] = {}  # registry uri -> its latest versioned id

    # ---------------------------------------------------------------- clients
    @property
    def ml(self) -> Any:
        if self._ml is None:
            import logging

            from azure.ai.ml import MLClient

            # The fine-tuning and serverless APIs are marked experimental; their per-call notices
            # would drown the CLI's own output. Real warnings and errors still come through.
            logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)

            s = self.settings
            self._ml = MLClient(s.credential(), s.subscription_id, s.resource_group, s.project, show_progress=False,
                                retry_policy=retry_policy())  # the SDK's defaults, waits on the time scale
        return self._ml

    @property
    def arm(self) -> ArmClient:
        if self._arm is None:
            self._arm = ArmClient(self.settings)
        return self._arm

    def _ws_path(self) -> str:
        s = self.settings
        return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{s.project}")

    def close(self) -> None:
        if self._arm is not None:
            self._arm.close()

    # -------------------------------------------------------------- preflight
    def preflight(self, base_model: str | None) -> dict[str, Any]:
        """Before any spend: hub-based project, region against the capability table, marketplace
        subscription. Raises CapabilityError / RegionUnavailable (exit 4); creates nothing unless
        ``accept_marketplace_terms`` is set."""
        workspace = self.ml.workspaces.get(self.settings.project)
        region = str(getattr(workspace, "location", "") or "").replace(" ", "").lower()
        kind = str(getattr(workspace, "_kind", None) or getattr(workspace, "kind", "") or "").lower()
        info = {"route": "serverless", "project": self.settings.project, "region": region, "kind": kind}
        if kind != "project":
            raise errors.CapabilityError(
                f"Workspace {self.settings.project!r} is not a hub-based Azure AI Foundry project (kind {kind or 'unknown'}).",
                hint="Serverless fine-tuning runs in a hub-based project: create one under an AI hub and set AZURE_AI_PROJECT.",
                provider="azure")
        if not base_model or base_model in self._preflight_done:
            return info
        retired = retired_refusal(base_model, region)
        if retired is not None:
            raise errors.CapabilityError(retired[0], hint=retired[1], provider="azure", code="ModelRetired")
        refusal = azure_serverless.refusal(base_model, region)
        if refusal is not None:
            found = serverless_model(base_model)
            error = errors.RegionUnavailable if found is not None else errors.CapabilityError
            raise error(f"Azure serverless fine-tuning refuses this: {refusal} (Microsoft's list as of "
                        f"{azure_serverless.AS_OF}). Nothing was uploaded.",
                        hint=(f"Use a hub-based project in one of those regions (set AZURE_AI_PROJECT). "
                              if found is not None else "") + f"Source: {azure_serverless.REGIONS_SOURCE}.",
                        provider="azure", code="RegionUnavailable" if found is not None else "ModelNotFineTunable")
        found = serverless_model(base_model)
        if found is not None and found.marketplace:
            self._ensure_marketplace(base_model, found.name)
        self._preflight_done.add(base_model)
        return info

    def plan(self, base_model: str) -> list[str]:
        """Before any upload: a retired model is refused without calling Azure at all; the rest of
        the preflight (project kind, region, marketplace) follows."""
        retired = retired_refusal(base_model, None)
        if retired is not None:
            region = None
            try:
                region = str(getattr(self.ml.workspaces.get(self.settings.project), "location", "") or "") or None
            except Exception:  # noqa: BLE001 - the region only sharpens the hint
                region = None
            message, hint = retired_refusal(base_model, region.replace(" ", "").lower() if region else None) or retired
            raise errors.CapabilityError(message, hint=hint, provider="azure", code="ModelRetired")
        info = self.preflight(base_model)
        found = serverless_model(base_model)
        return [f"Azure serverless fine-tuning of {found.name if found else base_model} in project "
                f"{info['project']} ({info['region']})."]

    def _ensure_marketplace(self, base_model: str, catalog_name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        name = re.sub(r"[^a-z0-9-]", "-", model_name(base_model).lower())[:50]
        try:
            self.ml.marketplace_subscriptions.get(name)
            return
        except ResourceNotFoundError:
            pass
        if not self.settings.options.get("accept_marketplace_terms"):
            raise errors.CapabilityError(
                f"{model_name(base_model)} needs an Azure Marketplace subscription in project {self.settings.project}.",
                hint="Subscribe in the Foundry portal, or set the provider option accept_marketplace_terms: true to "
                "let cloudtune create the subscription (you accept the model's marketplace terms).",
                provider="azure", code="MarketplaceSubscriptionMissing")
        from azure.ai.ml.entities import MarketplaceSubscription

        self.ml.marketplace_subscriptions.begin_create_or_update(
            MarketplaceSubscription(model_id=catalog_model_uri(base_model), name=name)).result()

    def check(self) -> dict[str, Any]:
        return self.preflight(self.base_model)

    # ------------------------------------------------------------------ files
    @staticmethod
    def asset_name(path: Path, content: bytes | None = None) -> str:
        """A run's upload (``ct-<run_id>-<role>.jsonl``) becomes the asset ``ct-<run_id>-<role>``:
        two runs never share an asset. Any other file is named by its content (resume-safe)."""
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)[:60] or "data"
        if stem.startswith("ct-"):
            return stem
        digest = hashlib.sha256(content if content is not None else path.read_bytes()).hexdigest()[:12]
        return f"ct-{stem[:40]}-{digest}"

    def upload_file(self, path: Path, progress: Callable[[int, int], None] | None) -> str:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        self.preflight(self.base_model)  # nothing is uploaded into a project that cannot run the job
        size = path.stat().st_size
        data = self.ml.data.create_or_update(Data(name=self.asset_name(path), version="1", path=str(path),
                                                  type=AssetTypes.URI_FILE,
                                                  tags={CLOUDTUNE_TAG[0]: CLOUDTUNE_TAG[1], FILE_NAME_TAG: path.name}))
        if progress is not None:
            progress(size, size)
        return f"azureml:{data.name}:{data.version}"

    def find_uploaded(self, path: Path, since: float) -> str | None:
        """The run-named asset, if an upload whose answer was lost created it."""
        if not path.stem.startswith("ct-"):
            return None
        try:
            found = self.ml.data.get(self.asset_name(path), version="1")
        except Exception as exc:  # noqa: BLE001 - only "not there" means None
            if type(exc).__name__ == "ResourceNotFoundError":
                return None
            raise
        if (getattr(found, "tags", None) or {}).get(FILE_NAME_TAG) != path.name:
            return None
        return f"azureml:{found.name}:{found.version}"

    def get_file(self, file_id: str) -> Any:
        from cloudtune.types import RemoteFile

        name, version = parse_asset(file_id)
        found = self.ml.data.get(name, version=version)
        created = self._created(found)
        return RemoteFile(id=file_id, name=(getattr(found, "tags", None) or {}).get(FILE_NAME_TAG), created_at=created)

    def delete_file(self, file_id: str) -> None:
        name, version = parse_asset(file_id)
        self.arm.request("DELETE", f"{self._ws_path()}/data/{name}/versions/{version}", ML_API_VERSION)

    # ------------------------------------------------------------------- jobs
    def create_job(self, spec: FineTuneSpec, training_file_id: str, validation_file_id: str | None, run_id: str) -> Job:
        from azure.ai.ml.finetuning import create_finetuning_job

        self.preflight(spec.base_model)
        hp = spec.hyperparameters
        hyper: dict[str, str] = {}
        if hp.epochs is not None:
            hyper["num_train_epochs"] = str(hp.epochs)
        if hp.batch_size is not None:
            hyper["per_device_train_batch_size"] = str(hp.batch_size)
        learning_rate = hp.extra.get("learning_rate")
        if learning_rate is None and hp.learning_rate_multiplier is not None:
            learning_rate = DEFAULT_LEARNING_RATE * hp.learning_rate_multiplier
        if learning_rate is not None:
            hyper["learning_rate"] = f"{float(learning_rate):g}"
        short = re.sub(r"[^a-z0-9]", "", run_id.lower())[-12:] or uuid.uuid4().hex[:12]
        # a fixed name per attempt: a PUT the SDK retries after an unknown outcome meets the job it made
        # (409), never creates a second one; the pipeline's find_jobs decides between attempts
        job_name = f"ctft-{short}-{uuid.uuid4().hex[:8]}"
        prefix = re.sub(r"[^A-Za-z0-9-]", "-", f"{model_name(spec.base_model)}-{spec.suffix or 'ft'}-{short}")[:60]
        job = create_finetuning_job(
            model=self.versioned_model_id(spec.base_model), task="ChatCompletion", training_data=training_file_id,
            # The SDK (and service) need validation data; without a split, the training data stands in.
            validation_data=validation_file_id or training_file_id, output_model_name_prefix=prefix,
            hyperparameters=hyper or None, name=job_name, experiment_name="cloudtune",
            tags={**spec.metadata, RUN_TAG: run_id, CLOUDTUNE_TAG[0]: CLOUDTUNE_TAG[1]},
            display_name=f"cloudtune {model_name(spec.base_model)} {short}")
        return self.to_job(self.ml.jobs.create_or_update(job))

    def versioned_model_id(self, base_model: str) -> str:
        """The catalog model's latest *versioned* registry id, which the docs create the job from
        (``registry_ml_client.models.get(name, label="latest").id``, how-to/fine-tune-serverless.md,
        01/28/2026): ``azureml://registries/azureml/models/Phi-4-mini-instruct/versions/<n>``."""
        uri = catalog_model_uri(base_model)
        if "/versions/" in uri:
            return uri
        if uri not in self._versioned:
            from azure.ai.ml import MLClient

            registry = uri.split("/registries/", 1)[1].split("/", 1)[0]
            client = MLClient(self.settings.credential(), registry_name=registry, show_progress=False,
                              retry_policy=retry_policy())
            self._versioned[uri] = client.models.get(model_name(uri), label="latest").id
        return self._versioned[uri]

    def find_jobs(self, run_id: str) -> list[Job]:
        found = [self.to_job(raw) for raw in listing.bounded(self.ml.jobs.list(), what="Azure ML jobs")
                 if (getattr(raw, "tags", None) or {}).get(RUN_TAG) == run_id]
        return sorted(found, key=lambda j: j.created_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)

    def get_job(self, job_id: str) -> Job:
        return self.to_job(self.ml.jobs.get(job_id))

    def list_jobs(self, limit: int) -> list[Job]:
        out = []
        for raw in listing.bounded(self.ml.jobs.list(), what="Azure ML jobs"):
            if (getattr(raw, "tags", None) or {}).get(CLOUDTUNE_TAG[0]) == CLOUDTUNE_TAG[1]:
                out.append(self.to_job(raw))
            if len(out) >= limit:
                break
        return out

    def cancel_job(self, job_id: str) -> Job:
        self.ml.jobs.begin_cancel(job_id)
        return self.get_job(job_id)

    def list_events(self, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        raw = self.ml.jobs.get(job_id)
        status = _text(raw.status) or "Unknown"
        reached = list(_PROGRESS[: _PROGRESS.index(status) + 1]) if status in _PROGRESS else (
            list(_PROGRESS) + [status] if status in _TERMINAL else [])
        created = self._created(raw) or datetime.now(timezone.utc)
        events = [JobEvent(id=f"{job_id}:{i}:{name}", created_at=created.replace(microsecond=min(i, 999999)),
                           level="error" if name == "Failed" else "info", message=f"Job status: {name}",
                           data={"status": name, "derived_from": "job status"}) for i, name in enumerate(reached)]
        ids = [event.id for event in events]
        if after in ids:
            events = events[ids.index(after) + 1:]
        return events[:limit]

    def to_job(self, raw: Any) -> Job:
        status = _text(raw.status)
        fine_tuned = None
        if status == "Completed":
            output = (getattr(raw, "outputs", None) or {}).get("registered_model")
            if output is not None and getattr(output, "name", None):
                fine_tuned = f"azureml:{output.name}:{getattr(output, 'version', None) or '1'}"
        model = getattr(raw, "model", None)
        return Job(id=raw.name, provider="azure", state=self.map_status(status), provider_status=status,
                   base_model=model_name(getattr(model, "path", "") or "") or None, fine_tuned_model=fine_tuned,
                   created_at=self._created(raw), metadata={k: str(v) for k, v in (raw.tags or {}).items()})

    @staticmethod
    def _created(raw: Any) -> datetime | None:
        context = getattr(raw, "creation_context", None)
        created = getattr(context, "created_at", None)
        if isinstance(created, datetime):
            return created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        return None

    # ------------------------------------------------------------ deployments
    def _model_id(self, model: str) -> str:
        """The documented deploy shape (how-to/fine-tune-serverless.md, 01/28/2026):
        ``azureml://locations/{location}/workspaces/{workspace_id}/models/{name}/versions/{version}``."""
        name, version = parse_asset(model)
        workspace = self.ml.workspaces.get(self.settings.project)
        location = str(getattr(workspace, "location", "") or "").replace(" ", "").lower()
        return f"azureml://locations/{location}/workspaces/{workspace._workspace_id}/models/{name}/versions/{version}"

    def deploy(self, model: str, name: str, run_id: str | None = None) -> Deployment:
        from azure.ai.ml.entities import ServerlessEndpoint
        from azure.core.exceptions import ResourceNotFoundError

        try:
            existing = self.get_deployment(name)
        except (errors.NotFound, ResourceNotFoundError):
            existing = None
        if existing is not None:
            if existing.model == model and existing.state != DeploymentState.DELETING:
                return existing
            raise errors.Conflict(f"Serverless endpoint name {name!r} is taken (model {existing.model}, {existing.state}).")
        tags = {CLOUDTUNE_TAG[0]: CLOUDTUNE_TAG[1]} | ({DEPLOYMENT_RUN_TAG: run_id} if run_id else {})
        endpoint = ServerlessEndpoint(name=name, model_id=self._model_id(model), tags=tags)
        # Not waited on here: the pipeline waits with wait_for_deployment (and survives a restart).
        self.ml.serverless_endpoints.begin_create_or_update(endpoint)
        return self.get_deployment(name)

    def get_deployment(self, name: str) -> Deployment:
        return self._to_deployment(self.ml.serverless_endpoints.get(name))

    def list_deployments(self, model: str | None) -> list[Deployment]:
        found = [self._to_deployment(raw) for raw in listing.bounded(self.ml.serverless_endpoints.list(),
                                                                     what="serverless endpoints")]
        return [d for d in found if model is None or d.model == model]

    def undeploy(self, name: str) -> None:
        self.ml.serverless_endpoints.begin_delete(name)

    def get_model(self, model: str) -> Any:
        name, version = parse_asset(model)
        return self.arm.request("GET", f"{self._ws_path()}/models/{name}/versions/{version}", ML_API_VERSION)

    def delete_model(self, model: str) -> None:
        name, version = parse_asset(model)
        self.arm.request("DELETE", f"{self._ws_path()}/models/{name}/versions/{version}", ML_API_VERSION)

    def _to_deployment(self, raw: Any) -> Deployment:
        status = _text(getattr(raw, "provisioning_state", None)) or ""
        model_id = str(getattr(raw, "model_id", "") or "")
        if "/models/" in model_id and "registries/" not in model_id:
            parts = model_id.rstrip("/").split("/models/", 1)[1].split("/")
            model = f"azureml:{parts[0]}:{parts[-1]}"
        else:
            model = model_id
        tags = getattr(raw, "tags", None) or {}
        return Deployment(**with_run_id(dict(
            name=raw.name, model=model, state=ENDPOINT_STATES.get(status.lower(), DeploymentState.CREATING),
            provider_status=status, endpoint_url=getattr(raw, "scoring_uri", None),
            managed_by_cloudtune=tags.get(CLOUDTUNE_TAG[0]) == CLOUDTUNE_TAG[1],
            details={"route": "serverless", "project": self.settings.project}), tags.get(DEPLOYMENT_RUN_TAG)))

    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], params: dict[str, Any]) -> ChatResult:
        from openai import OpenAI

        endpoint = self.ml.serverless_endpoints.get(deployment)
        key = self.ml.serverless_endpoints.get_keys(deployment).primary_key
        started = time.monotonic()
        # {scoring_uri}/v1/chat/completions with the endpoint key (how-to/fine-tune-serverless.md, 01/28/2026)
        with openai_client(OpenAI, base_url=endpoint.scoring_uri.rstrip("/") + "/v1", api_key=key, max_retries=2) as client:
            raw = client.chat.completions.create(model=deployment, messages=list(messages), **params)
        choice, usage = raw.choices[0], raw.usage
        return ChatResult(content=choice.message.content or "", model=raw.model, finish_reason=choice.finish_reason,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else None,
                          latency_s=time.monotonic() - started)
