"""What the Azure emulator remembers, and the service rules it enforces.

Everything lives in plain dicts guarded by the app's lock (the app holds it around every
handler). Time is the store's :class:`~cloudtune.emulators._http.EmulatorClock` (the app's), so a
test can run an hour of training or a slow endpoint creation in milliseconds. The route modules
(``_arm_ml``, ``_arm_ml_jobs``, ``_arm_cs``, ``_aoai``, ``_aoai_jobs``, ``_hosts``, ``_registry``)
register their handlers over one :class:`Store`.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from cloudtune.emulators._http import EmulatorClock, HTTPError

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
RESOURCE_GROUP = "rg-cloudtune"


@dataclass
class Timeline:
    """Emulated seconds each phase lasts (jobs, deployments, endpoint creation, deletes)."""

    validating_s: float = 2.0
    queued_s: float = 2.0
    running_s: float = 6.0
    deploy_s: float = 3.0
    delete_s: float = 1.0
    steps: int = 10  # training steps reported over the running phase
    developer_pause_s: float = 3.0  # a developerTier job is paused by the service this long, mid-training
    rft_hour_s: float = 0.0  # emulated seconds per billed RFT training hour; 0: running_s / 10 (a job bills 10 h)


@dataclass
class Rules:
    """Limits and capabilities the service enforces (defaults mirror Azure's documented ones)."""

    max_finetuned_deployments: int = 5  # Azure OpenAI: at most 5 fine-tuned deployments per resource
    deployment_capacity_quota: int = 500  # summed sku capacity per account (TPM / 1000)
    # serverless fine-tuning models, regions, retirements: cloudtune.service_facts.azure_serverless


@dataclass
class Seed:
    """The resources that exist before the user does anything."""

    subscription_id: str = SUBSCRIPTION_ID
    resource_group: str = RESOURCE_GROUP
    hub: str = "ct-hub"
    hub_region: str = "eastus2"
    # hub-based Foundry projects: name -> region
    projects: dict[str, str] = field(default_factory=lambda: {"ct-project": "eastus2", "ct-project-weu": "westeurope"})
    # workspaces that are NOT hub-based projects (plain Azure ML workspaces)
    plain_workspaces: dict[str, str] = field(default_factory=lambda: {"ct-workspace": "eastus2"})
    storage_account: str = "ctstorage"
    # one resource where Standard training and deployment of the GPT-4.1 family exist, one where they do not,
    # one in North Central US (Standard deployments of gpt-4o fine-tunes are not offered there)
    openai_accounts: dict[str, str] = field(default_factory=lambda: {"ct-aoai": "swedencentral", "ct-aoai-eus": "eastus",
                                                                     "ct-aoai-ncus": "northcentralus"})
    # Foundry resources (ARM kind AIServices): the open-weight models fine-tune only on these
    foundry_accounts: dict[str, str] = field(default_factory=lambda: {"ct-foundry": "eastus2"})


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def new_key() -> str:
    return secrets.token_urlsafe(24)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HTTPError:
    return HTTPError(status, {"error": {"code": code, "message": message}}, headers)


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Azure's error document (``{"error": {"code", "message"}}``), with a default code for the status."""
    return {"error": {"code": code or _default_code(status), "message": message}}


def _default_code(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}.get(
        status, "Error")


# ------------------------------------------------------- long-running ARM resources
# Cognitive Services deployments and serverless endpoints live the same way: ``Creating`` until
# their ready time, then ``Succeeded``; a delete stamps ``deleting_at`` once, and the resource
# lingers in ``Deleting`` (still counting as there) for ``Timeline.delete_s``.


def provisioning_state(resource: dict[str, Any], now: float, ready_at: float) -> str:
    if resource.get("deleting_at") is not None:
        return "Deleting"
    if resource.get("failed"):
        return "Failed"
    return "Succeeded" if now >= ready_at else "Creating"


def start_delete(table: dict[Any, dict[str, Any]], key: Any, now: float) -> bool:
    """Begin deleting ``table[key]``; False when there is nothing to delete."""
    resource = table.get(key)
    if resource is None:
        return False
    if resource.get("deleting_at") is None:
        resource["deleting_at"] = now
    return True


def purge_deleted(table: dict[Any, dict[str, Any]], now: float, delete_s: float) -> None:
    """Finish the deletes whose time has come."""
    for key, resource in list(table.items()):
        if resource.get("deleting_at") is not None and now >= resource["deleting_at"] + delete_s:
            del table[key]


def family_of(model: str) -> str | None:
    """A catalog model's name, lower-case ('azureml://registries/azureml/models/Phi-4-mini-instruct/versions/3'
    -> 'phi-4-mini-instruct'): what a marketplace subscription is for."""
    from cloudtune.service_facts.azure_serverless import model_name

    return model_name(model).lower() or None


class Store:
    """All emulated resources, on the emulator clock. Callers hold the app lock."""

    def __init__(self, seed: Seed, rules: Rules, timeline: Timeline, *, clock: EmulatorClock) -> None:
        self.clock = clock
        self.seed = seed
        self.rules = rules
        self.timeline = timeline
        self.container = "azureml-blobstore-" + uuid.uuid4().hex[:12]
        self.workspaces: dict[str, dict[str, Any]] = {}
        self.workspaces[seed.hub] = {"region": seed.hub_region, "kind": "Hub"}
        for name, region in seed.projects.items():
            self.workspaces[name] = {"region": region, "kind": "Project"}
        for name, region in seed.plain_workspaces.items():
            self.workspaces[name] = {"region": region, "kind": "Default"}
        self.accounts: dict[str, dict[str, Any]] = {
            name: {"region": region, "key": new_key(), "kind": "OpenAI"} for name, region in seed.openai_accounts.items()
        }
        self.accounts.update({name: {"region": region, "key": new_key(), "kind": "AIServices"}
                              for name, region in seed.foundry_accounts.items()})
        self.token_audiences: list[tuple[str, str]] = []  # (data-plane path, the bearer token's aud)
        self.blobs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.uncommitted_blocks: dict[tuple[str, str, str], dict[str, bytes]] = {}
        # Azure OpenAI data plane
        self.files: dict[str, dict[str, Any]] = {}
        self.ft_jobs: dict[str, dict[str, Any]] = {}
        self.ft_models: dict[str, dict[str, Any]] = {}  # fine-tuned model id -> {"account", "job_id"}
        self.cs_deployments: dict[tuple[str, str], dict[str, Any]] = {}  # (account, name)
        # Azure ML / Foundry project
        self.data: dict[tuple[str, str, str], dict[str, Any]] = {}  # (ws, name, version)
        self.ml_jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.models: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.endpoints: dict[tuple[str, str], dict[str, Any]] = {}
        self.marketplace: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.forced_status: dict[str, str] = {}  # job id/name -> raw status to report
        self.unknown_routes: list[str] = []

    @property
    def now(self) -> float:
        return self.clock.now()

    def add_operation(self, kind: str, key: Any) -> str:
        """A long-running operation the status routes answer for; returns its id."""
        op_id = new_id("op-")
        self.operations[op_id] = {"kind": kind, "key": key}
        return op_id

    # ---------------------------------------------------------------- lookups
    def workspace(self, name: str) -> dict[str, Any]:
        ws = self.workspaces.get(name)
        if ws is None:
            raise arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.MachineLearningServices/workspaces/{name}' "
                            f"under resource group '{self.seed.resource_group}' was not found.")
        return ws

    def account(self, name: str) -> dict[str, Any]:
        account = self.accounts.get(name)
        if account is None:
            raise arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.CognitiveServices/accounts/{name}' was not found.")
        return account

    def find_checkpoint(self, checkpoint_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(job, checkpoint) of a live Azure OpenAI job's checkpoint ``ftchkpt-...``; None when there is none."""
        for job in self.ft_jobs.values():
            if job.get("deleted"):
                continue
            for checkpoint in job["checkpoints"]:
                if checkpoint["id"] == checkpoint_id:
                    return job, checkpoint
        return None

    def needs_marketplace(self, model: str) -> bool:
        from cloudtune.service_facts.azure_serverless import lookup

        found = lookup(model)
        return found is not None and found.marketplace

    def summary(self) -> dict[str, Any]:
        """What is left on the emulator (for tests and ``/_emulator/state``); no keys."""
        live_jobs = lambda jobs: sorted(jobs)  # noqa: E731
        return {
            "files": sorted(self.files),
            "fine_tuning_jobs": live_jobs(self.ft_jobs),
            "fine_tuned_models": sorted(m for m, v in self.ft_models.items() if not v.get("deleted")),
            "cognitive_deployments": sorted(f"{a}/{n}" for (a, n) in self.cs_deployments),
            "data_assets": sorted(f"{w}/{n}:{v}" for (w, n, v) in self.data),
            "blobs": sorted(f"{a}/{c}/{p}" for (a, c, p) in self.blobs),
            "ml_jobs": sorted(f"{w}/{n}" for (w, n) in self.ml_jobs),
            "models": sorted(f"{w}/{n}:{v}" for (w, n, v) in self.models),
            "serverless_endpoints": sorted(f"{w}/{n}" for (w, n) in self.endpoints),
            "marketplace_subscriptions": sorted(f"{w}/{n}" for (w, n) in self.marketplace),
            "unknown_routes": list(self.unknown_routes),
        }
