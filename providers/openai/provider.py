"""``--provider openai``: fine-tuning on OpenAI through the official ``openai`` SDK.

Mostly a translation table: :data:`~providers.openai.convert.STATUS_MAP`,
:func:`~providers.openai.translate.translate_error` and the SDK calls below.

Options (``provider_options`` in a run config; none of them secret):

* ``base_url``, ``organization``, ``project``: otherwise the SDK reads
  ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``;
* ``api_key_env``: the variable holding the key (default ``OPENAI_API_KEY``);
* ``upload_threshold_bytes`` (default 512 MB: above it the Uploads API is used),
  ``upload_part_bytes`` (64 MB), ``upload_workers`` (4);
* ``request_timeout_s`` (120), ``read_attempts`` (6);
* ``deployments_file``: where deployment names are kept (see
  :mod:`providers.openai.deployments`).

Every SDK client is built with ``max_retries=0``: reads are retried here with
:func:`cloudtune.retry.call_with_retries` (honouring ``Retry-After``, sleeping
with the injected ``sleep``); ``create_job`` is never retried, because a
retried POST can create a second job. The pipeline asks :meth:`find_jobs`
first when the outcome of a create is unknown.
"""

from __future__ import annotations

import os
import time
from datetime import date
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from cloudtune import errors, listing, timescale
from cloudtune.provider import Provider, UploadProgress
from cloudtune.provider_facts import ProviderOptions, Text
from cloudtune.retry import call_with_retries
from cloudtune.types import (
    ChatResult,
    Checkpoint,
    CheckResult,
    Deployment,
    DeploymentState,
    DeployOptions,
    FineTuneSpec,
    Job,
    JobEvent,
    Method,
    RemoteFile,
)
from cloudtune.service_facts import openai_lifecycle as lifecycle
from providers.openai import capabilities, convert, fine_tuning, translate, uploads
from providers.openai.deployments import DeploymentNames, default_path
from providers.openai.facts import FACTS, NO_REINFORCEMENT

T = TypeVar("T")


class OpenAIOptions(ProviderOptions):
    base_url: Text | None = Field(None, description="API base URL (default: OPENAI_BASE_URL or https://api.openai.com/v1)")
    organization: Text | None = Field(None, description="organization id (default: OPENAI_ORG_ID)")
    project: Text | None = Field(None, description="project id (default: OPENAI_PROJECT_ID)")
    api_key_env: Text | None = Field(None, description="the environment variable holding the key (default OPENAI_API_KEY)")
    upload_threshold_bytes: int | None = Field(None, description="above this size the Uploads API is used (default 512 MB)")
    upload_part_bytes: int | None = Field(None, description="Uploads API part size (default 64 MB)")
    upload_workers: int | None = Field(None, description="parallel part uploads (default 4)")
    request_timeout_s: float | None = Field(None, description="per-request timeout in seconds (default 120)")
    read_attempts: int | None = Field(None, description="attempts for idempotent reads (default 6)")
    deployments_file: Text | None = Field(None, description="where deployment names are kept (default under CLOUDTUNE_HOME)")


class OpenAIProvider(Provider):
    name = "openai"
    install_extra = "openai"
    status_map = convert.STATUS_MAP
    Options = OpenAIOptions
    unsupported: Mapping[str, str] = {}
    facts = FACTS

    def __init__(self, options: Mapping[str, Any] | None = None, *, sleep: Callable[[float], None] = timescale.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(options, sleep=sleep, clock=clock)
        self._client: Any = None
        self._names: DeploymentNames | None = None

    # ---------------------------------------------------------- plumbing
    def event_may_change_state(self, event: Any) -> bool:
        return convert.event_may_change_state(event)

    def translate_error(self, exc: BaseException) -> errors.CloudtuneError:
        return translate.translate_error(exc)

    def _option(self, key: str, default: Any) -> Any:
        value = self.options.get(key)
        return default if value is None else value

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            key_env = self._option("api_key_env", "OPENAI_API_KEY")
            kwargs: dict[str, Any] = {
                "api_key": os.environ.get(key_env) or None,
                "max_retries": 0,  # retries are ours: see the module docstring
                "timeout": float(self._option("request_timeout_s", 120.0)),
            }
            for option in ("base_url", "organization", "project"):
                if self.options.get(option):
                    kwargs[option] = self.options[option]
            self._client = openai.OpenAI(**kwargs)
        return self._client

    @property
    def base_url(self) -> str:
        if self.options.get("base_url"):
            return str(self.options["base_url"])
        return os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    @property
    def names(self) -> DeploymentNames:
        if self._names is None:
            path = Path(self.options["deployments_file"]) if self.options.get("deployments_file") else default_path()
            self._names = DeploymentNames(path, self.base_url.rstrip("/"))
        return self._names

    def _read(self, call: Callable[[], T]) -> T:
        """An idempotent request, retried on transient errors (Retry-After honoured)."""
        return call_with_retries(call, attempts=int(self._option("read_attempts", 6)), sleep=self.sleep,
                                 translate=self.translate_error)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ----------------------------------------------------------- preflight
    def check(self) -> CheckResult:
        problems: list[str] = []
        details: dict[str, Any] = {
            "base_url": self.base_url,
            "capabilities_as_of": capabilities.AS_OF,
            "fine_tuning_availability": capabilities.wind_down_status(),
            "fine_tunable_models": capabilities.summary_rows(),
        }
        try:
            import openai

            details["sdk_version"] = openai.__version__
            sdk = True
        except ImportError:
            sdk = False
            problems.append("The openai SDK is not installed.")
        key_env = self._option("api_key_env", "OPENAI_API_KEY")
        credentials = bool(os.environ.get(key_env))
        if not credentials:
            problems.append(f"{key_env} is not set. {translate.CREDENTIALS_HINT}")
        base_model = self.options.get("base_model")
        if base_model:
            info = capabilities.model_info(base_model)
            if info is None:
                details["warning"] = (f"{base_model} is not in cloudtune's table of OpenAI models that can be "
                                      f"fine-tuned (as of {capabilities.AS_OF}); OpenAI may refuse it.")
            else:
                details["base_model"] = {"name": info.name, "methods": list(info.methods),
                                         "training_context_tokens": info.context_tokens}
        if capabilities.creation_blocked_for_everyone():
            problems.append("OpenAI no longer accepts new self-serve fine-tuning jobs. " + capabilities.wind_down_status())
        if sdk and credentials:
            try:
                # a preflight answers quickly: one retry at most, not the patient read policy
                call_with_retries(lambda: self.client.with_options(timeout=15.0).models.list(), attempts=2,
                                  sleep=self.sleep, translate=self.translate_error)
                details["api_reachable"] = True
            except errors.CloudtuneError as exc:
                details["api_reachable"] = False
                problems.append(f"{exc}{' ' + exc.hint if exc.hint else ''}")
        return CheckResult(provider=self.name, sdk_installed=sdk, credentials_found=credentials, ok=not problems,
                           details=details, problems=problems,
                           install_hint=None if sdk else "pip install 'cloudtune[openai]'")

    # ------------------------------------------------------ model lifecycle
    def shutdown_date(self, model: str) -> tuple[date | None, str]:
        """(the date ``model`` - or a fine-tune of it - stops serving, where the date came from):
        ``shutdown_date`` from ``GET /v1/models/{id}`` when the API answers, else the dated table."""
        base = lifecycle.base_of(model)
        try:
            # a quick answer or the table: not the patient read policy (this runs before every upload)
            found = call_with_retries(lambda: self.client.with_options(timeout=15.0).models.retrieve(base), attempts=2,
                                      sleep=self.sleep, translate=self.translate_error)
            live = lifecycle.parse_shutdown(getattr(found, "shutdown_date", None)
                                            or (getattr(found, "model_extra", None) or {}).get("shutdown_date"))
            if live is not None:
                return live, "GET /v1/models"
        except errors.CloudtuneError:
            pass  # offline, or a model the API does not list: the table decides
        return lifecycle.table_shutdown(base), lifecycle.SOURCE

    def plan(self, spec: FineTuneSpec) -> list[str]:
        """Before any upload: refuse a base model OpenAI has shut down and job creation after the
        wind-down (exit 4, with the command that runs the same spec elsewhere); otherwise say when
        the model this run makes stops serving."""
        if spec.method.value == "reinforcement":
            from cloudtune.service_facts.azure_rft import refusal_elsewhere

            message, hint = refusal_elsewhere(self.name, NO_REINFORCEMENT)
            raise errors.CapabilityError(message, hint=hint, provider=self.name, code="method_not_available")
        today = lifecycle.today()
        stops, source = self.shutdown_date(spec.base_model)
        elsewhere = alternatives(spec.base_model)
        if stops is not None and stops <= today:
            raise errors.CapabilityError(
                f"OpenAI shut {lifecycle.base_of(spec.base_model)} down on {stops} (and every fine-tune of it): it "
                "can no longer be fine-tuned. Nothing was uploaded.", hint=f"{elsewhere} Source: {source}.",
                provider=self.name, code="model_shut_down")
        if today >= lifecycle.JOB_CREATION_ENDS:
            raise errors.CapabilityError(
                f"OpenAI ended self-serve fine-tuning job creation for everyone on {lifecycle.JOB_CREATION_ENDS}. "
                "Nothing was uploaded.", hint=f"{elsewhere} Source: {lifecycle.SOURCE}.", provider=self.name,
                code="training_not_available")
        notes = [f"OpenAI job creation ends on {lifecycle.JOB_CREATION_ENDS} (earlier for organizations without "
                 "recent fine-tuning)."]
        if stops is not None:
            notes.insert(0, f"A model fine-tuned from {lifecycle.base_of(spec.base_model)} stops serving on {stops} "
                         f"(source: {source}).")
        return notes

    def hosting_note(self, spec: FineTuneSpec) -> str | None:
        stops, _ = self.shutdown_date(spec.base_model)
        return ("no hourly hosting fee: OpenAI serves fine-tuned models per token"
                + (f", until {stops}" if stops else ""))

    # -------------------------------------------------------------- files
    def upload_file(self, path: Path, *, purpose: str = "fine-tune", progress: UploadProgress | None = None) -> str:
        path = Path(path)
        size = path.stat().st_size
        threshold = int(self._option("upload_threshold_bytes", capabilities.FILES_API_MAX_BYTES))
        if size <= threshold:
            file_id = uploads.upload_small(self.client, path, purpose, self._read, progress)
        else:
            file_id = uploads.upload_multipart(
                self.client, path, purpose, self._read, progress,
                part_bytes=int(self._option("upload_part_bytes", capabilities.UPLOAD_PART_BYTES)),
                workers=int(self._option("upload_workers", 4)),
            )
        uploads.fail_if_errored(self.client, file_id, self._read)  # one look, no waiting for "processed"
        return file_id

    def find_uploaded(self, path: Path, *, since: float) -> str | None:
        path = Path(path)
        size = path.stat().st_size

        def newest() -> list[Any]:
            return listing.bounded(self.client.files.list(purpose="fine-tune"), what="uploaded files")

        found = fine_tuning.uploaded_file_matching(self._read(newest), filename=path.name, size=size, since=since)
        if found is None:
            return None
        uploads.fail_if_errored(self.client, found, self._read)
        return found

    def get_file(self, file_id: str) -> RemoteFile:
        raw = self._read(lambda: self.client.files.retrieve(file_id))
        return RemoteFile(id=raw.id, name=getattr(raw, "filename", None), bytes=getattr(raw, "bytes", None),
                          status=getattr(raw, "status", None))

    def delete_file(self, file_id: str) -> None:
        self._read(lambda: self.client.files.delete(file_id))

    # --------------------------------------------------------------- jobs
    def _job(self, raw: Any) -> Job:
        return convert.to_job(raw, self.map_status(getattr(raw, "status", None)))

    def create_job(self, spec: FineTuneSpec, *, training_file_id: str, validation_file_id: str | None,
                   run_id: str) -> Job:
        hyper: dict[str, Any] = {}
        h = spec.hyperparameters
        for ours, theirs in (("epochs", "n_epochs"), ("batch_size", "batch_size"),
                             ("learning_rate_multiplier", "learning_rate_multiplier")):
            if getattr(h, ours) is not None:
                hyper[theirs] = getattr(h, ours)
        if spec.method == Method.DPO and h.beta is not None:
            hyper["beta"] = h.beta
        hyper.update(h.extra)
        kind = spec.method.value
        request: dict[str, Any] = {
            "model": spec.base_model,
            "training_file": training_file_id,
            "method": {"type": kind, kind: {"hyperparameters": hyper}},
            "metadata": {**spec.metadata, convert.RUN_ID_KEY: run_id},
        }
        request.update(fine_tuning.optional_job_fields(spec, validation_file_id))
        try:
            raw = self.client.fine_tuning.jobs.create(**request)  # once: no retry (see module docstring)
        except errors.CloudtuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated once, then explained
            error = self.translate_error(exc)
            if error.code == "training_not_available":  # the wind-down reached this organization: exit 4
                error.hint = f"{error.hint} {alternatives(spec.base_model)}"
            elif isinstance(error, errors.AuthError) and error.status_code == 403:
                error.hint = f"{error.hint} {capabilities.wind_down_status()}"
            raise error from exc
        return self._job(raw)

    def find_jobs(self, run_id: str) -> list[Job]:
        def listing() -> list[Any]:
            # newest first, stopping at jobs created before the run began (a bounded number of pages)
            first = self.client.fine_tuning.jobs.list(metadata={convert.RUN_ID_KEY: run_id}, limit=fine_tuning.JOBS_PAGE)
            return fine_tuning.scan_jobs_of_run(first.iter_pages(), run_id,
                                                lambda raw: (getattr(raw, "metadata", None) or {}).get(convert.RUN_ID_KEY) == run_id)

        found = [self._job(raw) for raw in self._read(listing)]
        # filter again here: an API that ignored the filter must not hand us someone else's job
        found = [job for job in found if job.metadata.get(convert.RUN_ID_KEY) == run_id]
        return sorted(found, key=lambda job: job.created_at.timestamp() if job.created_at else 0, reverse=True)

    def get_job(self, job_id: str) -> Job:
        return self._job(self._read(lambda: self.client.fine_tuning.jobs.retrieve(job_id)))

    def list_jobs(self, limit: int = 20) -> list[Job]:
        return [self._job(raw) for raw in self._read(lambda: self.client.fine_tuning.jobs.list(limit=limit).data)]

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        def read_page(kwargs: dict[str, Any]) -> Any:
            return self._read(lambda: self.client.fine_tuning.jobs.list_events(job_id, **kwargs))

        return [convert.to_event(raw) for raw in fine_tuning.events_after(read_page, after, limit)]

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        raws = self._read(lambda: listing.bounded(self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100),
                                                  what=f"checkpoints of {job_id}", max_items=fine_tuning.MAX_CHECKPOINTS))
        return sorted((convert.to_checkpoint(raw) for raw in raws), key=lambda c: c.step or 0)

    def _post_then_look(self, call: Callable[[], Any], job_id: str, done: Callable[[Job], bool]) -> Job:
        """cancel/pause/resume: retried; a refusal because the job is already there counts as done."""
        try:
            return self._job(self._read(call))
        except errors.InvalidInput:
            job = self.get_job(job_id)
            if done(job):
                return job
            raise

    def cancel_job(self, job_id: str) -> Job:
        return self._post_then_look(lambda: self.client.fine_tuning.jobs.cancel(job_id), job_id, lambda j: j.is_terminal)

    def pause_job(self, job_id: str) -> Job:
        return self._post_then_look(lambda: self.client.fine_tuning.jobs.pause(job_id), job_id,
                                    lambda j: j.provider_status == "paused")

    def resume_job(self, job_id: str) -> Job:
        return self._post_then_look(lambda: self.client.fine_tuning.jobs.resume(job_id), job_id,
                                    lambda j: j.provider_status in ("running", "queued") or j.is_terminal)

    # -------------------------------------------------------- deployments
    def _deployment(self, name: str, model: str, managed: bool) -> Deployment:
        return Deployment(
            name=name, model=model, state=DeploymentState.READY, provider_status="served",
            endpoint_url=self.base_url.rstrip("/") + "/chat/completions", managed_by_cloudtune=managed,
            details={"served_as": model, "note": "OpenAI serves fine-tuned models as soon as the job succeeds."},
        )

    def _model_exists(self, model: str) -> None:
        self._read(lambda: self.client.models.retrieve(model))  # NotFound propagates

    def deploy(self, model: str, *, name: str, options: DeployOptions | None = None) -> Deployment:
        """``model`` is a fine-tuned model or a checkpoint's model id (``ft:...:ckpt-step-N``), which
        OpenAI serves like the model."""
        self._model_exists(model)
        current = self.names.model_for(name)
        if current is not None and current != model:
            raise errors.Conflict(f"The name {name} already points at {current}; pick another deployment name.",
                                  provider=self.name)
        self.names.add(name, model)
        deployment = self._deployment(name, model, managed=True)
        stops, source = self.shutdown_date(model)
        if stops is not None:
            deployment.details["notes"] = [f"{model} stops serving on {stops}: OpenAI shuts down every fine-tune "
                                           f"built on {lifecycle.base_of(model)} then (source: {source})."]
        return deployment

    def get_deployment(self, name: str) -> Deployment:
        model = self.names.model_for(name)
        managed = model is not None
        if model is None:
            if not name.startswith("ft:") or self.names.is_hidden(name):
                raise errors.NotFound(f"No OpenAI deployment named {name}.", provider=self.name)
            model = name
        self._model_exists(model)
        return self._deployment(name, model, managed)

    def list_deployments(self, model: str | None = None) -> list[Deployment]:
        existing = {m.id for m in self._read(lambda: listing.bounded(self.client.models.list(), what="models",
                                                                     max_items=10_000)) if m.id.startswith("ft:")}
        # only named deployments: see providers.openai.deployments for why implicit ones are not listed
        return [self._deployment(n, m, managed=True) for n, m in sorted(self.names.names().items())
                if m in existing and (model is None or m == model)]

    def undeploy(self, name: str) -> None:
        if self.names.model_for(name) is None and name.startswith("ft:"):
            self._model_exists(name)  # a model that is gone has no deployment to remove
        if not self.names.remove(name):
            raise errors.NotFound(f"No OpenAI deployment named {name}.", provider=self.name)

    def delete_model(self, model: str) -> None:
        # OpenAI deletes a model even while "deployed" (it has no deployments to refuse for)
        try:
            self._read(lambda: self.client.models.delete(model))
        except errors.NotFound:
            self.names.forget_model(model)
            raise
        self.names.forget_model(model)

    def model_exists(self, model: str) -> bool | None:
        try:
            self._read(lambda: self.client.models.retrieve(model))
        except errors.NotFound:
            return False
        return True

    # --------------------------------------------------------------- chat
    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResult:
        model = self.names.model_for(deployment) or deployment
        started = time.perf_counter()
        raw = self._read(lambda: self.client.chat.completions.create(model=model, messages=list(messages), **params))
        return convert.to_chat_result(raw, latency_s=time.perf_counter() - started)


def alternatives(model: str) -> str:
    """The exact commands that run the same spec where it still can run."""
    from cloudtune.service_facts import azure_openai

    azure = lifecycle.azure_equivalent(model)
    retiring = azure_openai.retirement(azure)
    until = (f" until {retiring.deployments_retire} (Azure's retirement schedule for fine-tuned {retiring.short})"
             if retiring else "")
    return (f"Run the same spec on Azure OpenAI (the same model family keeps serving there{until}): add `--provider "
            f"azure --model {azure}`; or locally: `--provider local --model {lifecycle.LOCAL_ALTERNATIVE}`.")
