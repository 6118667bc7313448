"""``--provider azure``: Azure AI Foundry behind the one interface, by two routes.

How the route is picked, first match wins:

1. ``options["route"]`` = ``openai`` | ``serverless``;
2. the shape of the id the call is about: ``ftjob-<hex>`` / ``ftchkpt-<hex>`` / ``file-<hex>`` / ``<model>.ft-<hex>``
   / ``ft:...`` / ``gpt-...`` are Azure OpenAI; ``azureml:<name>:<version>`` and ``azureml://registries/...``
   data and models are serverless; a deployment goes to the route it was created or listed on;
3. ``options["base_model"]`` (the pipeline passes it): ``gpt-*`` / ``o*`` models are Azure OpenAI,
   catalog models (Phi, Llama, Mistral...) are serverless;
4. whichever is configured: ``AZURE_OPENAI_ENDPOINT`` -> openai, else serverless.

Delete order is enforced here too: ``delete_model`` first lists the model's deployments and raises
:class:`~cloudtune.errors.Conflict` naming each one (saying which were not created by cloudtune)
before anything is deleted, so the service's own 409 refusal never surfaces from cloudtune's flow.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cloudtune import errors
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
    JobEvent,
    JobState,
)
from cloudtune.service_facts import azure_openai as rules
from providers.azure import _capabilities as caps
from providers.azure.facts import FACTS
from providers.azure._settings import Settings
from providers.azure._translate import translate_error

_AOAI_ID = re.compile(r"^(ftjob-[0-9a-f]{16,}|ftchkpt-[0-9a-f]{16,}|file-[0-9a-f]{16,}|.+\.ft-[0-9a-f]{16,}.*)$")

# Azure OpenAI statuses (lower-cased; Azure's ``pending`` / ``notRunning`` included) and Azure ML
# job statuses, in one table. Anything else is ``unknown``.
STATUS_MAP: dict[str, JobState] = {
    # Azure OpenAI fine-tuning jobs. pausing/paused/resuming exist from 2025-04-01-preview and on v1
    # (openai/includes/fine-tuning-rest.md); a developerTier job is paused and resumed by the service
    # itself (openai/how-to/fine-tuning-cost-management.md): PAUSED is not terminal, the wait goes on.
    "pausing": JobState.PAUSED, "resuming": JobState.RUNNING,
    "pending": JobState.VALIDATING, "validating_files": JobState.VALIDATING, "notrunning": JobState.QUEUED,
    "queued": JobState.QUEUED, "running": JobState.RUNNING, "paused": JobState.PAUSED,
    "succeeded": JobState.SUCCEEDED, "failed": JobState.FAILED, "cancelled": JobState.CANCELLED,
    "canceled": JobState.CANCELLED, "deleted": JobState.CANCELLED,
    # Azure ML (serverless fine-tuning) jobs
    "notstarted": JobState.QUEUED, "starting": JobState.QUEUED, "provisioning": JobState.QUEUED,
    "preparing": JobState.QUEUED, "finalizing": JobState.RUNNING, "cancelrequested": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
}


class AzureOptions(ProviderOptions):
    route: Text | None = Field(None, description="openai | serverless (default: from the base model)")
    endpoint: Text | None = Field(
        None, description="Azure OpenAI endpoint https://<resource>.openai.azure.com (or AZURE_OPENAI_ENDPOINT)")
    account: Text | None = Field(None, description="Azure OpenAI resource name (default: the endpoint's host)")
    api_version: Text | None = Field(
        None, description="v1 (default, GA surface), preview, or a dated data-plane version such as 2024-10-21")
    training_type: Text | None = Field(
        None, description="GlobalStandard (default) | Standard | DataZoneStandard | developerTier")
    deployment_sku: Text | None = Field(
        None, description="Standard | GlobalStandard | DeveloperTier | ProvisionedManaged (default from model and region)")
    subscription_id: Text | None = Field(None, description="Azure subscription (or AZURE_SUBSCRIPTION_ID)")
    resource_group: Text | None = Field(None, description="resource group (or AZURE_RESOURCE_GROUP)")
    project: Text | None = Field(
        None, description="hub-based Foundry project for serverless fine-tuning (or AZURE_AI_PROJECT)")
    credential: Text | None = Field(None, description="default | environment | cli | managed-identity")
    accept_marketplace_terms: bool | None = Field(
        None, description="true: subscribe the project to a third-party model's marketplace offer")
    base_model: Text | None = Field(None, description="set by the pipeline")


class AzureProvider(Provider):
    name = "azure"
    install_extra = "azure"
    status_map: ClassVar[Mapping[str, JobState]] = STATUS_MAP
    unsupported: ClassVar[Mapping[str, str]] = {}
    Options = AzureOptions
    facts = FACTS

    def __init__(self, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.settings = Settings(self.options)
        self._routes: dict[str, Any] = {}
        # deployment name -> the route it was seen on: a name has no route in its shape, and with both
        # routes configured the default route would be the wrong one for the other route's deployments
        self._deployment_routes: dict[str, str] = {}

    # ------------------------------------------------------------- routing
    def _route(self, kind: str) -> Any:
        if kind not in self._routes:
            if kind == "openai":
                from providers.azure._openai_route import OpenAIRoute

                self._routes[kind] = OpenAIRoute(self.settings, self.map_status, self.sleep)
            else:
                from providers.azure._serverless_route import ServerlessRoute

                self._routes[kind] = ServerlessRoute(self.settings, self.map_status, self.options.get("base_model"))
        return self._routes[kind]

    def route_name(self, about: str | None = None) -> str:
        forced = self.options.get("route")
        if forced in ("openai", "serverless"):
            return forced
        if about:
            if _AOAI_ID.match(about) or about.startswith(("ft:", "gpt-")):
                return "openai"
            if about.startswith("azureml:"):  # azureml:<name>:<version> and azureml://registries/... ids
                return "serverless"
        by_model = self._route_for_model(self.options.get("base_model")) if self.options.get("base_model") else None
        if by_model:
            return by_model
        return "openai" if os.environ.get("AZURE_OPENAI_ENDPOINT") or self.options.get("endpoint") else "serverless"

    def _route_for_model(self, model: str) -> str | None:
        forced = self.options.get("route")
        return forced if forced in ("openai", "serverless") else caps.route_for_model(
            model, self._has_endpoint(), bool(os.environ.get("AZURE_AI_PROJECT") or self.options.get("project")))

    def _has_endpoint(self) -> bool:
        return bool(os.environ.get("AZURE_OPENAI_ENDPOINT") or self.options.get("endpoint"))

    def _for(self, about: str | None = None) -> Any:
        return self._route(self.route_name(about))

    def needs_validation_data(self, spec: FineTuneSpec) -> bool:
        # create_finetuning_job refuses a serverless job without validation data; RFT needs both files
        return self.route_name() == "serverless" or spec.method.value == "reinforcement"

    def translate_error(self, exc: BaseException) -> errors.CloudtuneError:
        return translate_error(exc)

    def close(self) -> None:
        for route in self._routes.values():
            route.close()
        self._routes.clear()

    # ------------------------------------------------------------ interface
    def check(self) -> CheckResult:
        problems: list[str] = []
        details: dict[str, Any] = {"route": self.route_name()}
        installed = True
        try:
            import azure.ai.ml  # noqa: F401
            import azure.identity  # noqa: F401
            import openai  # noqa: F401
        except ImportError as exc:
            installed = False
            problems.append(f"SDK missing: {exc.name}")
        credentials = installed
        if installed:
            try:
                details.update(self._for().check())
            except (errors.AuthError, errors.ConfigError) as exc:  # refused, or nothing configured
                credentials = False
                problems.append(str(exc) + (f" {exc.hint}" if exc.hint else ""))
            except errors.CloudtuneError as exc:
                problems.append(str(exc) + (f" {exc.hint}" if exc.hint else ""))
            except Exception as exc:  # noqa: BLE001 - check() reports, never raises
                translated = translate_error(exc)
                credentials = credentials and not isinstance(translated, errors.AuthError)
                problems.append(str(translated))
        details["capabilities_listed_on"] = {"openai": caps.AOAI_LISTED_ON, "serverless": caps.SERVERLESS_LISTED_ON}
        return CheckResult(provider=self.name, sdk_installed=installed, credentials_found=credentials,
                           ok=installed and credentials and not problems, details=details, problems=problems,
                           install_hint=None if installed else "pip install 'cloudtune[azure]'")

    def plan(self, spec: FineTuneSpec) -> list[str]:
        """Before anything is uploaded: refuse what the service would refuse (exit 4) and return
        the lines the user should read first (resolved model id, training type, region)."""
        try:
            route = self._route(self._route_for_model(spec.base_model) or self.route_name())
            return route.plan(spec) if route.name == "openai" else route.plan(spec.base_model)
        except errors.CloudtuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - not an interface method: translated here, once
            raise translate_error(exc) from exc

    def hourly_billing(self, spec: FineTuneSpec) -> tuple[float | None, float] | None:
        """(USD per training hour, the service's pause) for reinforcement fine-tuning; None otherwise."""
        if spec.method.value != "reinforcement":
            return None
        from cloudtune.service_facts import azure_rft

        row = rules.base_model(spec.base_model)
        return azure_rft.hourly_price(row.short if row else spec.base_model), azure_rft.PAUSE_AT_USD

    def hosting_note(self, spec: FineTuneSpec) -> str | None:
        """The hourly cost of the deployment the run will make (printed before upload)."""
        route = self._route(self._route_for_model(spec.base_model) or self.route_name())
        if route.name == "serverless":
            return "a serverless endpoint is billed per token by the model's Marketplace offer (no SKU to choose)"
        sku, why = route.choose_sku(spec.base_model, spec.deploy, self.options.get("deployment_sku"))
        from cloudtune.service_facts.openai_lifecycle import today

        retiring = rules.retirement_note(spec.base_model, today())
        return f"{rules.hosting_note(sku)}; {why}. {rules.LIFETIME_RULES}" + (f" {retiring}" if retiring else "")

    def upload_file(self, path: Path, *, purpose: str = "fine-tune", progress: UploadProgress | None = None) -> str:
        return self._for().upload_file(Path(path), progress)

    def get_file(self, file_id: str) -> Any:
        return self._for(file_id).get_file(file_id)

    def find_uploaded(self, path: Path, *, since: float) -> str | None:
        route = self._for()
        # both routes match the run-tagged name (ct-<run_id>-<role>.jsonl): never another run's upload
        return route.find_uploaded(Path(path), since) if hasattr(route, "find_uploaded") else None

    def delete_file(self, file_id: str) -> None:
        self._for(file_id).delete_file(file_id)

    def create_job(self, spec: FineTuneSpec, *, training_file_id: str, validation_file_id: str | None, run_id: str) -> Job:
        route = self._route(self.route_name(training_file_id) if training_file_id else self._route_for_model(spec.base_model))
        return route.create_job(spec, training_file_id, validation_file_id, run_id)

    def find_jobs(self, run_id: str) -> list[Job]:
        return self._for().find_jobs(run_id)

    def get_job(self, job_id: str) -> Job:
        return self._for(job_id).get_job(job_id)

    def list_jobs(self, limit: int = 20) -> list[Job]:
        return self._for().list_jobs(limit)

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        return self._for(job_id).list_events(job_id, after, limit)

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        route = self._for(job_id)
        return route.list_checkpoints(job_id) if hasattr(route, "list_checkpoints") else []

    def cancel_job(self, job_id: str) -> Job:
        return self._for(job_id).cancel_job(job_id)

    def pause_job(self, job_id: str) -> Job:
        return self._pausable(job_id).pause_job(job_id)

    def resume_job(self, job_id: str) -> Job:
        return self._pausable(job_id).resume_job(job_id)

    def _pausable(self, job_id: str) -> Any:
        route = self._for(job_id)
        if route.name != "openai":
            raise errors.UnsupportedOperation("Serverless (Azure ML) fine-tuning jobs cannot be paused or resumed.",
                                              provider=self.name)
        return route

    def deploy(self, model: str, *, name: str, options: DeployOptions | None = None,
               run_id: str | None = None) -> Deployment:
        route = self._for(model)
        self._deployment_routes[name] = route.name
        if route.name == "openai":
            return route.deploy(model, name, options, self.options.get("deployment_sku"), run_id)
        return route.deploy(model, name, run_id)

    def _for_deployment(self, name: str) -> Any:
        return self._route(self._deployment_routes.get(name) or self.route_name())

    def get_deployment(self, name: str) -> Deployment:
        return self._for_deployment(name).get_deployment(name)

    def list_deployments(self, model: str | None = None) -> list[Deployment]:
        route = self._for(model)
        found = route.list_deployments(model)
        self._deployment_routes.update({d.name: route.name for d in found})
        return found

    def undeploy(self, name: str) -> None:
        self._for_deployment(name).undeploy(name)

    def delete_model(self, model: str) -> None:
        route = self._for(model)
        serving = route.list_deployments(model)
        if serving:
            described = ", ".join(f"{d.name} ({d.state}{'' if d.managed_by_cloudtune else ', NOT created by cloudtune'})"
                                  for d in serving)
            outside = [d.name for d in serving if not d.managed_by_cloudtune]
            hint = ("Deployments not created by cloudtune are left alone: delete them yourself (portal or az CLI) "
                    "if they may go, then run delete-model again." if outside else
                    "Run `cloudtune undeploy RUN` (or `cloudtune delete-model`, which undeploys first), then retry.")
            raise errors.Conflict(f"Model {model} is still deployed: {described}. Nothing was deleted.",
                                  hint=hint, provider=self.name, code="ModelStillDeployed")
        route.delete_model(model)

    def model_exists(self, model: str) -> bool | None:
        route = self._for(model)
        try:
            route.get_model(model)
        except errors.NotFound:
            return False
        except errors.CloudtuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - only "not there" is an answer; the rest is translated
            if isinstance(self.translate_error(exc), errors.NotFound):
                return False
            raise
        return True

    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResult:
        return self._for_deployment(deployment).chat(deployment, messages, params)
