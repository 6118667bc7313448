"""Azure OpenAI route: files and fine-tuning jobs on the data plane, deployments through Azure
Resource Manager (Microsoft.CognitiveServices), chat through the deployment.

The data plane defaults to the GA v1 surface: the plain ``openai.OpenAI`` client at
``https://<resource>.openai.azure.com/openai/v1/`` with no api-version
(MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/openai/api-version-lifecycle.md`` and
``openai/includes/fine-tuning-oai-sdk.md``, 09/01/2025). A dated version (``-o api_version=2024-10-21``)
still selects ``openai.AzureOpenAI``; versions before ``2025-04-01-preview`` have no ``method``,
``metadata``, ``trainingType`` or pause/resume in their job schema (spec
``stable/2024-10-21/azureopenai.json``), so none of them is sent there and a run's job is found by its
run-tagged training file name instead of metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloudtune import errors, listing
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
from cloudtune.service_facts import azure_openai as rules
from cloudtune.service_facts import openai_lifecycle
from providers.azure._sdk_retries import openai_client
from providers.azure._settings import CLOUDTUNE_TAG, CS_API_VERSION, RUN_TAG, ArmClient, Settings
from providers.openai import fine_tuning
from providers.openai.convert import to_chat_result

DEPLOYMENT_STATES = {
    "accepted": DeploymentState.CREATING, "creating": DeploymentState.CREATING, "updating": DeploymentState.CREATING,
    "moving": DeploymentState.CREATING, "succeeded": DeploymentState.READY, "failed": DeploymentState.FAILED,
    "canceled": DeploymentState.FAILED, "deleting": DeploymentState.DELETING,
}
SKUS = rules.DEPLOYMENT_SKUS
DEPLOYMENT_RUN_TAG = "cloudtune-run"  # ARM tag naming the run that created a deployment


def when(value: Any) -> datetime | None:
    if value in (None, 0):
        return None  # Azure returns null (and sometimes 0) for what has not happened yet
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(key)  # fields the openai SDK's models do not declare (trainingType)
    return value


def with_run_id(fields: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """``Deployment`` keyword arguments, with ``run_id`` where the core's type has that field."""
    if "run_id" in getattr(Deployment, "model_fields", {}):
        fields["run_id"] = run_id
    return fields


class OpenAIRoute:
    name = "openai"

    def __init__(self, settings: Settings, map_status: Callable[[str | None], Any], sleep: Callable[[float], None]) -> None:
        self.settings = settings
        self.map_status = map_status
        self.sleep = sleep
        self._client: Any = None
        self._delete_client: Any = None
        self._arm: ArmClient | None = None
        self._region: str | None = None
        self._kind: str | None = None  # ARM account kind: openai (classic) | aiservices (Foundry resource)

    # ---------------------------------------------------------------- clients
    @property
    def on_v1(self) -> bool:
        return self.settings.api_version in ("v1", "preview")

    @property
    def has_job_features(self) -> bool:
        """trainingType, method, metadata, pause/resume and the pausing/paused/resuming states."""
        return self.on_v1 or self.settings.api_version >= rules.FEATURES_FROM_VERSION

    def _auth(self, *, v1: bool) -> dict[str, Any]:
        import os

        key = os.environ.get("AZURE_OPENAI_API_KEY")
        if key:
            return {"api_key": key}
        from azure.identity import get_bearer_token_provider

        # the v1 samples' scope on v1; the dated samples' Cognitive Services scope on dated versions
        tokens = get_bearer_token_provider(self.settings.credential(), rules.V1_SCOPE if v1 else rules.DATED_SCOPE)
        # the v1 docs pass the token provider as the plain client's api_key (a callable)
        return {"api_key": tokens} if v1 else {"azure_ad_token_provider": tokens}

    def _dated_client(self, api_version: str) -> Any:
        from openai import AzureOpenAI

        return openai_client(AzureOpenAI, azure_endpoint=self.settings.endpoint, api_version=api_version,
                             max_retries=3, **self._auth(v1=False))

    @property
    def client(self) -> Any:
        if self._client is None:
            if self.on_v1:
                from openai import OpenAI

                query = {"api-version": "preview"} if self.settings.api_version == "preview" else None
                self._client = openai_client(OpenAI, base_url=f"{self.settings.endpoint}/openai/v1/", max_retries=3,
                                             default_query=query, **self._auth(v1=True))
            else:
                self._client = self._dated_client(self.settings.api_version)
        return self._client

    @property
    def arm(self) -> ArmClient:
        if self._arm is None:
            self._arm = ArmClient(self.settings)
        return self._arm

    def _account_path(self) -> str:
        s = self.settings
        return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}/providers/"
                f"Microsoft.CognitiveServices/accounts/{s.account}")

    def _deployments_path(self, name: str | None = None) -> str:
        base = f"{self._account_path()}/deployments"
        return f"{base}/{name}" if name else base

    def region(self) -> str | None:
        """The resource's region (ARM), or None when ARM is not configured (key-only use)."""
        if self._region is None:
            from azure.core.exceptions import ClientAuthenticationError

            try:
                account = self.arm.request("GET", self._account_path(), CS_API_VERSION) or {}
            except (errors.ConfigError, ClientAuthenticationError):
                return None  # ARM not configured (key-only use): the region is not checked, the service decides
            self._region = rules.normalise_region(account.get("location"))
            self._kind = str(account.get("kind") or "").lower() or None
        return self._region or None

    def account_kind(self) -> str | None:
        """ARM's kind of the resource, lower-case: ``openai`` (classic) or ``aiservices`` (Foundry); None unknown."""
        self.region()
        return self._kind

    def close(self) -> None:
        for client in (self._client, self._delete_client):
            if client is not None:
                client.close()
        if self._arm is not None:
            self._arm.close()

    def check(self) -> dict[str, Any]:
        self.settings.credential().get_token(rules.V1_SCOPE if self.on_v1 else rules.DATED_SCOPE)
        return {"route": "openai", "endpoint": self.settings.endpoint, "account": self.settings.account,
                "region": self.region(), "api": "v1" if self.on_v1 else self.settings.api_version,
                "training_type": self.training_type}

    # -------------------------------------------------------------- preflight
    @property
    def training_type(self) -> str:
        return str(self.settings.options.get("training_type") or rules.DEFAULT_TRAINING_TYPE)

    def plan(self, spec: FineTuneSpec) -> list[str]:
        """Before any upload: everything the service would refuse (exit 4) and the notes to read first
        (:func:`providers.azure._preflight.plan_openai`)."""
        from providers.azure._preflight import plan_openai

        return plan_openai(self, spec)

    # ----------------------------------------------------------------- files
    def find_uploaded(self, path: Path, since: float) -> str | None:
        from providers.openai.fine_tuning import uploaded_file_matching

        files = listing.bounded(self.client.files.list(purpose="fine-tune"), what="uploaded files")
        return uploaded_file_matching(files, filename=path.name, size=path.stat().st_size, since=since)

    def upload_file(self, path: Path, progress: Callable[[int, int], None] | None) -> str:
        size = path.stat().st_size
        with path.open("rb") as handle:
            # no SDK retries: a retried POST can store a second copy; the pipeline finds the run-tagged
            # name after an unknown outcome and decides
            created = self.client.with_options(max_retries=0).files.create(file=(path.name, handle), purpose="fine-tune")
        # Azure imports the file before a job may use it: wait for ``processed``.
        status, waited = created.status, 0.0
        while status not in ("processed", "error", "deleted") and waited < 600:
            self.sleep(1.0)  # the provider's sleep: on the time scale
            waited += 1.0
            status = self.client.files.retrieve(created.id).status
        if status == "error":
            raise errors.DatasetError(f"Azure OpenAI could not import {path.name}.", provider="azure")
        if progress is not None:
            progress(size, size)
        return created.id

    def get_file(self, file_id: str) -> Any:
        from cloudtune.types import RemoteFile

        raw = self.client.files.retrieve(file_id)
        return RemoteFile(id=raw.id, name=_get(raw, "filename"), bytes=_get(raw, "bytes"),
                          created_at=when(_get(raw, "created_at")), status=_get(raw, "status"))

    def delete_file(self, file_id: str) -> None:
        self.client.files.delete(file_id)

    # ------------------------------------------------------------------ jobs
    def create_job(self, spec: FineTuneSpec, training_file_id: str, validation_file_id: str | None, run_id: str) -> Job:
        model, _ = rules.resolve_model(spec.base_model)
        hp = spec.hyperparameters
        hyper = {k: v for k, v in {"n_epochs": hp.epochs, "batch_size": hp.batch_size,
                                   "learning_rate_multiplier": hp.learning_rate_multiplier}.items() if v is not None}
        kwargs: dict[str, Any] = {"model": model, "training_file": training_file_id}
        if self.has_job_features:
            if spec.method.value == "reinforcement":
                from providers.azure._rft import reinforcement_method

                method = reinforcement_method(spec)
            else:
                method = {"type": spec.method.value}
                method[spec.method.value] = {"hyperparameters": hyper | ({"beta": hp.beta} if hp.beta and spec.method.value == "dpo" else {})}
            kwargs.update(method=method, metadata={**spec.metadata, RUN_TAG: run_id},
                          extra_body={"trainingType": rules.canonical_training_type(self.training_type) or self.training_type})
        else:
            if spec.method.value != "supervised":
                raise errors.CapabilityError(
                    f"api_version {self.settings.api_version} has no fine-tuning methods other than supervised.",
                    hint="Use the default v1 API (drop -o api_version) or 2025-04-01-preview or later.", provider="azure")
            if hyper:
                kwargs["hyperparameters"] = hyper
        kwargs.update(fine_tuning.optional_job_fields(spec, validation_file_id))
        # No SDK retries: a retried POST could create a second job (the pipeline uses find_jobs).
        raw = self.client.with_options(max_retries=0).fine_tuning.jobs.create(**kwargs)
        return self.to_job(raw)

    def find_jobs(self, run_id: str) -> list[Job]:
        """This run's jobs: metadata carries the run id where the API has metadata; on every version
        the training file's name does (the pipeline uploads ``ct-<run_id>-train.jsonl``). The scan is
        bounded: it stops at jobs created before the run began."""
        tagged = self._files_named_for(run_id)

        def ours(raw: Any) -> bool:
            return (_get(raw, "metadata") or {}).get(RUN_TAG) == run_id or _get(raw, "training_file") in tagged

        first = self.client.fine_tuning.jobs.list(limit=fine_tuning.JOBS_PAGE)
        found = [self.to_job(raw) for raw in fine_tuning.scan_jobs_of_run(first.iter_pages(), run_id, ours)]
        return sorted(found, key=lambda j: j.created_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)

    def _files_named_for(self, run_id: str) -> set[str]:
        prefix = f"ct-{run_id}-"
        return {f.id for f in listing.bounded(self.client.files.list(purpose="fine-tune"), what="uploaded files")
                if str(_get(f, "filename") or "").startswith(prefix)}

    def get_job(self, job_id: str) -> Job:
        return self.to_job(self.client.fine_tuning.jobs.retrieve(job_id))

    def list_jobs(self, limit: int) -> list[Job]:
        return [self.to_job(raw) for raw in self.client.fine_tuning.jobs.list(limit=limit).data[:limit]]

    def cancel_job(self, job_id: str) -> Job:
        return self.to_job(self.client.fine_tuning.jobs.cancel(job_id))

    def _require_pause_api(self) -> None:
        if not self.has_job_features:
            raise errors.UnsupportedOperation(
                f"api_version {self.settings.api_version} cannot pause or resume jobs.",
                hint="Use the default v1 API or 2025-04-01-preview or later.", provider="azure")

    def pause_job(self, job_id: str) -> Job:
        self._require_pause_api()
        return self.to_job(self.client.fine_tuning.jobs.pause(job_id))

    def resume_job(self, job_id: str) -> Job:
        """Resume a job its user paused. A developerTier job the service paused is resumed by the
        service itself (fine-tuning-cost-management.md): asking is refused, and that is no failure."""
        import openai

        self._require_pause_api()
        try:
            return self.to_job(self.client.fine_tuning.jobs.resume(job_id))
        except openai.BadRequestError:
            raw = self.client.fine_tuning.jobs.retrieve(job_id)
            if _get(raw, "trainingType") == "developerTier" and raw.status in ("pausing", "paused", "resuming"):
                return self.to_job(raw)
            raise

    def list_events(self, job_id: str, after: str | None, limit: int) -> list[JobEvent]:
        # Same paging as OpenAI's; retries are the AzureOpenAI client's own (max_retries=3).
        newer = fine_tuning.events_after(lambda kwargs: self.client.fine_tuning.jobs.list_events(job_id, **kwargs),
                                         after, limit)
        return [JobEvent(id=raw.id, created_at=when(raw.created_at) or datetime.now(timezone.utc),
                         level=raw.level or "info", message=raw.message or "",
                         data=dict(_get(raw, "data") or {})) for raw in newer]

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        out = []
        for raw in listing.bounded(self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100),
                                   what=f"checkpoints of {job_id}", max_items=fine_tuning.MAX_CHECKPOINTS):
            metrics = {k: float(v) for k, v in dict(_get(raw, "metrics") or {}).items() if isinstance(v, (int, float))}
            # the ftchkpt- id is what a deployment names (openai/includes/fine-tuning-oai-sdk.md)
            out.append(Checkpoint(id=raw.id, job_id=job_id, step=_get(raw, "step_number"), created_at=when(raw.created_at),
                                  model=raw.id, metrics=metrics))
        return out

    def to_job(self, raw: Any) -> Job:
        error = _get(raw, "error")
        message = _get(error, "message") if error else None
        code = _get(error, "code") if error else None
        method = _get(raw, "method")
        if (raw.status == "paused" and _get(method, "type") == "reinforcement" and not message
                and str(_get(raw, "trainingType") or "").lower() != "developertier"):
            from cloudtune.service_facts import azure_rft

            # an RFT job the service paused at its billing cap (or that someone paused): it waits for a decision
            code = "paused_at_billing_cap"
            message = (f"Reinforcement job {raw.id} is paused: the service pauses RFT jobs when training and grading "
                       f"reach ${azure_rft.PAUSE_AT_USD:,.0f}, and keeps the latest checkpoint deployable. Deploy its "
                       "latest checkpoint (`cloudtune status RUN` lists them; `cloudtune deploy RUN --checkpoint ID`), or `cloudtune resume RUN` to go on "
                       f"training (billing continues with no further limit), or cancel. Source: {azure_rft.SOURCE}.")
        return Job(
            id=raw.id, provider="azure", state=self.map_status(raw.status), provider_status=raw.status,
            base_model=raw.model, fine_tuned_model=_get(raw, "fine_tuned_model") or None,
            created_at=when(raw.created_at), finished_at=when(_get(raw, "finished_at")),
            trained_tokens=_get(raw, "trained_tokens"), metadata=dict(_get(raw, "metadata") or {}),
            error=JobError(code=code, message=message or str(code), param=_get(error, "param")) if (message or code) else None,
            estimated_finish=when(_get(raw, "estimated_finish")),
        )

    # ----------------------------------------------------------- deployments
    def choose_sku(self, model: str, options: DeployOptions | None, configured: str | None) -> tuple[str, str]:
        """(ARM sku name, why): the user's choice when given, else one chosen from the base model and the
        resource's region (Standard where fine-tunes of the model deploy regionally, else GlobalStandard)."""
        asked = (options.sku if options and options.sku else None) or configured
        region = self.region()
        base = self._base_of(model)
        if asked:
            sku = rules.canonical_sku(asked)
            refusal = rules.deployment_refusal(base or "", asked, region)
            if sku is None or refusal is not None:
                raise errors.CapabilityError(f"Azure OpenAI cannot deploy {model}: {refusal}.",
                                             hint=f"Source: {rules.DEPLOY_SOURCE}.", provider="azure",
                                             code="DeploymentSkuUnavailable")
            return sku, f"{sku}: asked for"
        return rules.default_sku(base or "", region)

    def _base_of(self, model: str) -> str | None:
        """The base model a fine-tuned model or checkpoint was trained from (for the SKU rules)."""
        if ".ft-" in model:
            return model.split(".ft-", 1)[0]
        if model.startswith("ftchkpt-"):
            return None  # the checkpoint's job is not known from its id alone
        return model

    def deploy(self, model: str, name: str, options: DeployOptions | None, default_sku: str | None,
               run_id: str | None = None) -> Deployment:
        """``model`` is a fine-tuned model or one of its checkpoints (``ftchkpt-...``: the last three
        epochs of a job can be deployed like the model, openai/includes/fine-tuning-oai-sdk.md)."""
        from azure.core.exceptions import ResourceNotFoundError

        sku, why = self.choose_sku(model, options, default_sku)
        try:
            existing = self.get_deployment(name)
        except ResourceNotFoundError:
            existing = None
        if existing is not None:
            if existing.model == model and existing.state != DeploymentState.DELETING:
                return existing  # idempotent: resume re-sends deploy
            raise errors.Conflict(f"Deployment name {name!r} is taken (model {existing.model}, {existing.state}).",
                                  hint="Pick another deployment name.")
        tags = {CLOUDTUNE_TAG[0]: CLOUDTUNE_TAG[1]} | ({DEPLOYMENT_RUN_TAG: run_id} if run_id else {})
        body = {"sku": {"name": sku, "capacity": (options.capacity if options and options.capacity else 1)},
                "tags": tags, "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}}}
        deployment = self._to_deployment(self.arm.request("PUT", self._deployments_path(name), CS_API_VERSION, body))
        retiring = rules.retirement_note(self._base_of(model) or "", openai_lifecycle.today())
        deployment.details["notes"] = [f"Deployment SKU {why}.", *([retiring] if retiring else []),
                                       *deployment.details.get("notes", [])]
        return deployment

    def get_deployment(self, name: str) -> Deployment:
        return self._to_deployment(self.arm.request("GET", self._deployments_path(name), CS_API_VERSION))

    def list_deployments(self, model: str | None) -> list[Deployment]:
        listed = self.arm.request("GET", self._deployments_path(), CS_API_VERSION) or {}
        if listed.get("nextLink"):  # one page holds far more deployments than a resource's quota allows
            listing.stopped_early("deployments", "after the first page (the service says there are more)")
        deployments = [self._to_deployment(item) for item in listing.bounded(listed.get("value", []), what="deployments")]
        return [d for d in deployments if model is None or d.model == model]

    def undeploy(self, name: str) -> None:
        self.arm.request("DELETE", self._deployments_path(name), CS_API_VERSION)

    def get_model(self, model: str) -> Any:
        return self.client.models.retrieve(model)  # 404 -> NotFound (a model deleted with its job)

    def delete_model(self, model: str) -> None:
        """The v1 spec's ``/models/{id}`` is GET-only; the documented delete of a customized model is
        ``DELETE /openai/fine_tuning/jobs/{job_id}`` in api-version 2024-10-21 (spec
        ``stable/2024-10-21/azureopenai.json``, FineTuning_Delete: deletes the job and its model).
        A model that does not exist raises NotFound (the base class turns it into success unless
        the caller asked ``missing_ok=False``)."""
        if model.startswith("ftchkpt-"):
            raise errors.UnsupportedOperation("A checkpoint is deleted with its job's model, not on its own.",
                                              provider="azure")
        raw = self.client.models.retrieve(model)  # 404 -> NotFound
        job_id = _get(raw, "fine_tune") or ("ftjob-" + model.split(".ft-", 1)[1].split("-", 1)[0] if ".ft-" in model else None)
        if not job_id:
            raise errors.InvalidInput(f"{model} is not a fine-tuned model (no .ft- in its id).", provider="azure")
        if self._delete_client is None:
            self._delete_client = self._dated_client(rules.DELETE_JOB_VERSION)
        self._delete_client.with_options(max_retries=0).delete(f"/fine_tuning/jobs/{job_id}", cast_to=object)

    def _to_deployment(self, raw: Mapping[str, Any]) -> Deployment:
        props = raw.get("properties") or {}
        status = props.get("provisioningState")
        tags = raw.get("tags") or {}
        sku = raw.get("sku") or {}
        sku_name = rules.canonical_sku(str(sku.get("name") or "")) or sku.get("name")
        return Deployment(**with_run_id(dict(
            name=raw["name"], model=(props.get("model") or {}).get("name") or "",
            state=DEPLOYMENT_STATES.get(str(status).lower(), DeploymentState.CREATING), provider_status=status,
            endpoint_url=f"{self.settings.endpoint}/openai/v1/chat/completions (model={raw['name']})",
            managed_by_cloudtune=tags.get(CLOUDTUNE_TAG[0]) == CLOUDTUNE_TAG[1],
            details={"route": "openai", "sku": sku_name, "capacity": sku.get("capacity"),
                     "account": self.settings.account,
                     "notes": [rules.hosting_note(str(sku_name)), rules.LIFETIME_RULES]},
        ), tags.get(DEPLOYMENT_RUN_TAG)))

    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], params: dict[str, Any]) -> ChatResult:
        started = time.monotonic()
        raw = self.client.chat.completions.create(model=deployment, messages=list(messages), **params)
        return to_chat_result(raw, latency_s=time.monotonic() - started)
