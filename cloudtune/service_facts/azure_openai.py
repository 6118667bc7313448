"""Azure OpenAI fine-tuning rules as data: base models, training types, deployment SKUs, regions,
lifetimes and hosting prices. Read by the provider (preflight before any upload, the default
deployment SKU) and by the Azure emulator (which refuses what the service refuses), so both move
together when Microsoft's tables change.

Sources (MicrosoftDocs/azure-ai-docs, ``articles/ai-foundry/``, read 2026-11-25):

* ``openai/includes/fine-tune-models.md`` (ms.date 02/06/2025): models, Standard training regions,
  Global training availability and the regions Global training is offered to.
* ``openai/includes/fine-tuning-oai-sdk.md`` (ms.date 09/01/2025): ``trainingType`` is passed in the
  request body as ``GlobalStandard`` (recommended), ``Standard`` or ``developerTier``; the v1 surface
  is ``https://<resource>.openai.azure.com/openai/v1/`` with the plain ``OpenAI`` client.
* ``openai/how-to/fine-tuning-cost-management.md``: Developer training is for the GPT-4.1 family, runs on
  idle capacity and may be preempted (paused) and resumed by the service.
* ``openai/how-to/fine-tuning-deploy.md`` / ``openai/how-to/fine-tune-test.md``: deployment types of
  fine-tuned models (Standard regional, GlobalStandard, DeveloperTier - ARM sku name ``developertier`` -,
  ProvisionedManaged); Developer-tier deployments live 24 hours.
* ``openai/includes/fine-tune.md``: a fine-tuned deployment idle for 15 days is deleted.
* ``openai/api-version-lifecycle.md``: the GA v1 API needs no api-version; dated versions from
  ``2025-04-01-preview`` carry ``method``, ``metadata``, ``trainingType``, pause/resume.
* Hosting price: https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/
  (fine-tuned Standard / Global Standard deployments: $1.70 per hour, read 2025-11; Developer tier: no
  hosting fee).
"""

from __future__ import annotations

from dataclasses import dataclass

RULES_AS_OF = "2026-11-25"
MODELS_SOURCE = "MicrosoftDocs/azure-ai-docs articles/ai-foundry/openai/includes/fine-tune-models.md (02/06/2025)"
DEPLOY_SOURCE = "MicrosoftDocs/azure-ai-docs articles/ai-foundry/openai/how-to/fine-tuning-deploy.md, fine-tune-test.md"

#: the first dated data-plane version whose job schema has trainingType, method, metadata and pause/resume
FEATURES_FROM_VERSION = "2025-04-01-preview"
#: the dated version that documents ``DELETE /fine_tuning/jobs/{id}`` (the v1 spec's /models/{id} is GET-only)
DELETE_JOB_VERSION = "2024-10-21"

TRAINING_TYPES = ("Standard", "GlobalStandard", "developerTier")
DEFAULT_TRAINING_TYPE = "GlobalStandard"  # what the SDK how-to recommends

#: Regions Global (and Developer) training is offered to (fine-tune-models.md note).
GLOBAL_TRAINING_REGIONS = (
    "australiaeast", "brazilsouth", "canadacentral", "canadaeast", "eastus", "eastus2", "francecentral",
    "germanywestcentral", "italynorth", "japaneast", "koreacentral", "northcentralus", "norwayeast",
    "polandcentral", "southeastasia", "southafricanorth", "southcentralus", "southindia", "spaincentral",
    "swedencentral", "switzerlandwest", "switzerlandnorth", "uksouth", "westeurope", "westus", "westus3",
)


@dataclass(frozen=True)
class BaseModel:
    dated_id: str  # the id the docs create jobs with
    short: str  # the name users type
    standard_regions: tuple[str, ...]  # Standard (regional) training; also where Standard deployments run
    global_training: bool
    developer_training: bool  # Developer tier: GPT-4.1 family only

    def training_regions(self, training_type: str) -> tuple[str, ...]:
        if training_type == "Standard":
            return self.standard_regions
        if training_type == "GlobalStandard":
            return GLOBAL_TRAINING_REGIONS if self.global_training else ()
        return GLOBAL_TRAINING_REGIONS if self.developer_training else ()


_NCUS_SWC = ("northcentralus", "swedencentral")
BASE_MODELS: tuple[BaseModel, ...] = (
    BaseModel("gpt-4.1-2025-04-14", "gpt-4.1", _NCUS_SWC, True, True),
    BaseModel("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini", _NCUS_SWC, True, True),
    BaseModel("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", _NCUS_SWC, True, True),
    BaseModel("gpt-4o-2024-08-06", "gpt-4o", ("eastus2", "northcentralus", "swedencentral"), True, False),
    BaseModel("gpt-4o-mini-2024-07-18", "gpt-4o-mini", _NCUS_SWC, True, False),
    BaseModel("o4-mini-2025-04-16", "o4-mini", ("eastus2", "swedencentral"), False, False),
)


def base_model(model: str) -> BaseModel | None:
    """The table row for a dated id or its short name (a fine-tuned model ``<dated>.ft-<hex>`` as a base
    for continued fine-tuning maps to its own base)."""
    name = model.split(".ft-", 1)[0].lower()
    for row in BASE_MODELS:
        if name in (row.dated_id, row.short):
            return row
    return None


def resolve_model(model: str) -> tuple[str, str | None]:
    """(the id to send, a note when a short name was resolved to its dated id)."""
    row = base_model(model)
    if row is not None and model.lower() == row.short:
        return row.dated_id, f"Azure OpenAI base model {model} resolved to {row.dated_id} (the dated id the docs use)."
    return model, None


def normalise_region(region: str | None) -> str:
    return str(region or "").replace(" ", "").lower()


def training_refusal(model: str, training_type: str, region: str | None) -> str | None:
    """Why the service would refuse this model x training type x region, or None."""
    if training_type not in TRAINING_TYPES:
        return f"unknown training type {training_type!r}; use one of {', '.join(TRAINING_TYPES)}"
    row = base_model(model)
    if row is None:
        known = ", ".join(r.short for r in BASE_MODELS)
        return f"{model} is not an Azure OpenAI model that can be fine-tuned (known: {known})"
    regions = row.training_regions(training_type)
    if not regions:
        offered = [t for t in TRAINING_TYPES if row.training_regions(t)]
        return f"{row.dated_id} has no {training_type} training (offered: {', '.join(offered)})"
    region = normalise_region(region)
    if region and region not in regions:
        return (f"{training_type} training of {row.dated_id} is not offered in {region}; it is in: "
                f"{', '.join(regions)}")
    return None


# ------------------------------------------------------------------ deployments
DEPLOYMENT_SKUS = ("Standard", "GlobalStandard", "DeveloperTier", "ProvisionedManaged")
HOSTING_USD_PER_HOUR = {"Standard": 1.70, "GlobalStandard": 1.70, "DeveloperTier": 0.0}  # ProvisionedManaged: PTU
HOSTING_PRICE_SOURCE = "https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/ (read 2025-11)"
DEVELOPER_TIER_LIFETIME_H = 24
IDLE_DELETION_DAYS = 15
LIFETIME_RULES = (f"Azure deletes a DeveloperTier deployment {DEVELOPER_TIER_LIFETIME_H} hours after it is created, and "
                  f"any fine-tuned deployment that has been idle for {IDLE_DELETION_DAYS} days.")


def canonical_sku(sku: str) -> str | None:
    """ARM compares sku names without case (the REST example sends ``developertier``)."""
    for known in DEPLOYMENT_SKUS:
        if sku.lower() == known.lower():
            return known
    return None


def deployment_refusal(model: str, sku: str, region: str | None) -> str | None:
    """Why ARM would refuse to deploy a model fine-tuned from ``model`` with ``sku`` in ``region``."""
    known = canonical_sku(sku)
    if known is None:
        hint = " (ARM's name for the developer tier is DeveloperTier)" if sku.lower() == "developer" else ""
        return f"the SKU {sku!r} is not one Azure offers for fine-tuned models{hint}: use {', '.join(DEPLOYMENT_SKUS)}"
    row = base_model(model)
    region = normalise_region(region)
    if row is None or not region:
        return None
    if known in ("Standard", "ProvisionedManaged") and region not in row.standard_regions:
        return (f"{known} deployments of {row.short} fine-tunes are regional and offered in "
                f"{', '.join(row.standard_regions)}, not {region}; use GlobalStandard")
    if known == "DeveloperTier" and not row.developer_training:
        return f"DeveloperTier deployments are offered for the GPT-4.1 family, not {row.short}"
    return None


def default_sku(model: str, region: str | None) -> tuple[str, str]:
    """(sku, the reason in one sentence) for a model fine-tuned from ``model`` in ``region``."""
    row = base_model(model)
    region = normalise_region(region)
    if row is not None and region and region in row.standard_regions:
        return "Standard", f"Standard: {row.short} fine-tunes deploy regionally in {region}, so data stays in the region"
    if row is not None and region:
        return "GlobalStandard", (f"GlobalStandard: Standard deployments of {row.short} fine-tunes are offered only in "
                                  f"{', '.join(row.standard_regions)} and this resource is in {region}")
    return "GlobalStandard", "GlobalStandard: the resource's region is unknown and GlobalStandard works in every region"


def hosting_note(sku: str) -> str:
    price = HOSTING_USD_PER_HOUR.get(sku)
    if price is None:
        return f"{sku}: billed per provisioned throughput unit (PTU) hour, see {HOSTING_PRICE_SOURCE}"
    if price == 0:
        return f"{sku}: no hourly hosting fee, tokens only ({HOSTING_PRICE_SOURCE})"
    return f"{sku}: hosting ~${price:.2f}/hour while deployed, used or not ({HOSTING_PRICE_SOURCE})"
