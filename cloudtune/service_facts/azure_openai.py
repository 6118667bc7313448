"""Azure OpenAI fine-tuning rules as data: base models, methods, training types and their regions,
deployment SKUs and the regions each is offered in, lifetimes, retirements and hosting prices. Read by
the provider (preflight before any upload, the default deployment SKU) and by the Azure emulator (which
refuses what the service refuses), so both move together when Microsoft's tables change.

Sources (MicrosoftDocs/azure-ai-docs, ``articles/foundry/``, read 2026-12-04; each row below names its
file and ``ms.date``; the older ``articles/ai-foundry/`` paths are now the "classic" copies):

* ``includes/fine-tune-supported-models.md`` (ms.date 03/05/2026): models, Standard training regions,
  Data Zone (US), Global and Developer training, methods (SFT / DPO / RFT), status; the open-weight models
  (Ministral-3B, Qwen-32B, Llama-3.3-70B-Instruct, gpt-oss-20b) "only on Foundry resources".
* ``openai/includes/fine-tune-global-training-regions.md`` (10/06/2026): where Global training runs, and
  its caveats (Poland Central: no gpt-4.1-nano; Japan East: no vision; UAE North: four named open models only).
* ``includes/fine-tune-standard-deployment-regions.md`` and
  ``includes/fine-tune-provisioned-throughput-deployment-regions.md`` (10/07/2026): where Standard and
  ProvisionedManaged deployments of fine-tuned models are offered (not the training regions).
* ``openai/how-to/fine-tuning-deploy.md`` (02/11/2026): GlobalStandard for every fine-tunable model in every
  region; DeveloperTier for o4-mini and the GPT-4.1 family.
* ``openai/includes/how-to-fine-tuning-cost-management-content.md`` (03/19/2026): hosting $1.70/hour
  (Standard, GlobalStandard), no hosting fee for Developer tier (deleted after 24 hours); Developer training
  is paused and resumed by the service; RFT billing (see :mod:`azure_rft`).
* ``openai/includes/concepts-model-retirement-schedule-content.md`` (07/07/2026): fine-tuned model
  deployment retirement and training retirement dates.
* ``openai/includes/fine-tuning-oai-sdk.md`` (09/01/2025): ``trainingType`` in the request body
  (``GlobalStandard``, ``Standard``, ``developerTier``).
* ``openai/includes/api-version-lifecycle-content.md`` (03/19/2026): the v1 surface, Entra scope
  ``https://ai.azure.com/.default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

RULES_AS_OF = "2026-12-04"
_DOCS = "MicrosoftDocs/azure-ai-docs articles/foundry/"
MODELS_SOURCE = f"{_DOCS}includes/fine-tune-supported-models.md (ms.date 03/05/2026)"
GLOBAL_REGIONS_SOURCE = f"{_DOCS}openai/includes/fine-tune-global-training-regions.md (ms.date 10/06/2026)"
STANDARD_DEPLOY_SOURCE = f"{_DOCS}includes/fine-tune-standard-deployment-regions.md (ms.date 10/07/2026)"
PTU_DEPLOY_SOURCE = f"{_DOCS}includes/fine-tune-provisioned-throughput-deployment-regions.md (ms.date 10/07/2026)"
DEPLOY_SOURCE = f"{_DOCS}openai/how-to/fine-tuning-deploy.md (ms.date 02/11/2026)"
COST_SOURCE = f"{_DOCS}openai/includes/how-to-fine-tuning-cost-management-content.md (ms.date 03/19/2026)"
RETIREMENT_SOURCE = f"{_DOCS}openai/includes/concepts-model-retirement-schedule-content.md (ms.date 07/07/2026)"
V1_SOURCE = f"{_DOCS}openai/includes/api-version-lifecycle-content.md (ms.date 03/19/2026)"

#: the first dated data-plane version whose job schema has trainingType, method, metadata and pause/resume
FEATURES_FROM_VERSION = "2025-04-01-preview"
#: the dated version that documents ``DELETE /fine_tuning/jobs/{id}`` (the v1 spec's /models/{id} is GET-only)
DELETE_JOB_VERSION = "2024-10-21"

#: Entra ID scope of the v1 surface: every v1 sample uses it (api-version-lifecycle-content.md, 03/19/2026).
#: The dated surface's samples (AzureOpenAI client) still use the Cognitive Services scope.
V1_SCOPE = "https://ai.azure.com/.default"
DATED_SCOPE = "https://cognitiveservices.azure.com/.default"

# ``trainingType`` values. fine-tuning-oai-sdk.md spells Standard, GlobalStandard and developerTier; the
# Data Zone column of fine-tune-supported-models.md names no request value, so cloudtune sends the Data
# Zone deployment type's name, DataZoneStandard (compared without case, like the other values).
TRAINING_TYPES = ("Standard", "GlobalStandard", "developerTier", "DataZoneStandard")
DEFAULT_TRAINING_TYPE = "GlobalStandard"  # what the SDK how-to recommends

#: Regions Global (and Developer) training is offered to (fine-tune-global-training-regions.md).
GLOBAL_TRAINING_REGIONS = (
    "australiaeast", "brazilsouth", "canadacentral", "canadaeast", "eastus", "eastus2", "francecentral",
    "germanywestcentral", "italynorth", "japaneast", "koreacentral", "northcentralus", "norwayeast",
    "polandcentral", "southafricanorth", "southcentralus", "southindia", "southeastasia", "spaincentral",
    "swedencentral", "switzerlandnorth", "switzerlandwest", "uaenorth", "uksouth", "westeurope", "westus", "westus3",
)
#: footnotes of the Global training table: (region, the models it refuses or None, why)
GLOBAL_TRAINING_CAVEATS = {
    "polandcentral": "Managed fine-tuning for gpt-4.1-nano isn't supported in Poland Central",
    "japaneast": "Vision fine-tuning isn't supported in Japan East",
    "uaenorth": ("UAE North supports Global managed fine-tuning only for Qwen3.6-35B-A3B, Qwen3.8-27B, "
                 "Muse-Glimmer-30B and gpt-oss-120b"),
}
UAE_NORTH_ONLY = ("qwen3.6-35b-a3b", "qwen3.8-27b", "muse-glimmer-30b", "gpt-oss-120b")
#: The US data zone: the US regions an Azure resource can be in (Data Zone training keeps data in the zone).
DATA_ZONES = {"US": ("centralus", "eastus", "eastus2", "northcentralus", "southcentralus", "westcentralus",
                     "westus", "westus2", "westus3")}


@dataclass(frozen=True)
class BaseModel:
    dated_id: str  # the id the docs create jobs with
    short: str  # the name users type
    standard_regions: tuple[str, ...]  # Standard (regional) training
    data_zone: str | None  # Data Zone training zone ("US")
    global_training: bool
    developer_training: bool
    methods: tuple[str, ...]  # cloudtune's names: supervised, dpo, reinforcement
    status: str = "GA"
    vision: bool = False
    open_weight: bool = False  # "only supported on Foundry resources" (not a classic Azure OpenAI resource)
    gated: str | None = None  # access by invitation

    def training_regions(self, training_type: str) -> tuple[str, ...]:
        kind = canonical_training_type(training_type)
        if kind == "Standard":
            return self.standard_regions
        if kind == "DataZoneStandard":
            return DATA_ZONES.get(self.data_zone or "", ())
        if kind == "GlobalStandard":
            return GLOBAL_TRAINING_REGIONS if self.global_training else ()
        if kind == "developerTier":
            return GLOBAL_TRAINING_REGIONS if self.developer_training else ()
        return ()


_NCUS_SWC = ("northcentralus", "swedencentral")
_SFT_DPO = ("supervised", "dpo")
BASE_MODELS: tuple[BaseModel, ...] = (  # fine-tune-supported-models.md (03/05/2026), row by row
    BaseModel("gpt-4o-mini-2024-07-18", "gpt-4o-mini", _NCUS_SWC, "US", True, True, ("supervised",)),
    BaseModel("gpt-4o-2024-08-06", "gpt-4o", ("eastus2", "northcentralus", "swedencentral"), "US", True, True,
              _SFT_DPO, vision=True),
    BaseModel("gpt-4.1-2025-04-14", "gpt-4.1", _NCUS_SWC, "US", True, True, _SFT_DPO, vision=True),
    BaseModel("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini", _NCUS_SWC, "US", True, True, _SFT_DPO),
    BaseModel("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", _NCUS_SWC, "US", True, True, _SFT_DPO),
    BaseModel("o4-mini-2025-04-16", "o4-mini", ("eastus2", "swedencentral"), "US", True, False, ("reinforcement",)),
    BaseModel("gpt-5-2025-08-07", "gpt-5", _NCUS_SWC, "US", True, True, ("reinforcement",),
              gated="GA, but access is gated and by invitation only: contact your Microsoft account team"),
    BaseModel("Ministral-3B", "ministral-3b", (), "US", True, False, ("supervised",), open_weight=True),
    BaseModel("Qwen-32B", "qwen-32b", (), "US", True, False, ("supervised",), open_weight=True),
    BaseModel("Llama-3.3-70B-Instruct", "llama-3.3-70b-instruct", (), "US", True, False, ("supervised",),
              open_weight=True),
    BaseModel("gpt-oss-20b", "gpt-oss-20b", (), "US", True, False, ("supervised",), open_weight=True),
)
#: Azure OpenAI models that were fine-tunable and are no longer (not in the supported-models table)
NO_LONGER_FINE_TUNABLE = {"gpt-35-turbo": "gpt-4.1-mini-2025-04-14", "gpt-3.5-turbo": "gpt-4.1-mini-2025-04-14"}


def base_model(model: str) -> BaseModel | None:
    """The table row for a dated id or its short name (a fine-tuned model ``<dated>.ft-<hex>`` as a base
    for continued fine-tuning maps to its own base)."""
    name = model.split(".ft-", 1)[0].lower()
    for row in BASE_MODELS:
        if name in (row.dated_id.lower(), row.short):
            return row
    return None


def resolve_model(model: str) -> tuple[str, str | None]:
    """(the id to send, a note when a short name was resolved to its dated id)."""
    row = base_model(model)
    if row is not None and model.lower() == row.short and row.dated_id.lower() != row.short:
        return row.dated_id, f"Azure OpenAI base model {model} resolved to {row.dated_id} (the dated id the docs use)."
    if row is not None:
        return row.dated_id if model.lower() == row.dated_id.lower() else model, None
    return model, None


def normalise_region(region: str | None) -> str:
    return str(region or "").replace(" ", "").lower()


def canonical_training_type(value: str | None) -> str | None:
    wanted = str(value or "").lower()
    for known in TRAINING_TYPES:
        if wanted and wanted in (known.lower(), known.lower().replace("standard", "") or known.lower()):
            return known
    return None


def method_refusal(model: str, method: str) -> str | None:
    """Why the service would refuse ``method`` (supervised | dpo | reinforcement) for ``model``."""
    row = base_model(model)
    if row is None or method in row.methods:
        return None
    names = {"supervised": "supervised (SFT)", "dpo": "DPO", "reinforcement": "reinforcement (RFT)"}
    takes = " and ".join(names[m] for m in row.methods)
    return f"{row.short} takes {takes} fine-tuning only, not {names.get(method, method)}"


def models_for(method: str) -> list[str]:
    return [row.short for row in BASE_MODELS if method in row.methods]


def no_longer_fine_tunable(model: str) -> str | None:
    """The successor of a model Azure no longer fine-tunes (gpt-35-turbo), or None."""
    name = model.lower()
    for prefix, successor in NO_LONGER_FINE_TUNABLE.items():
        if name == prefix or name.startswith(prefix + "-"):
            return successor
    return None


def training_refusal(model: str, training_type: str, region: str | None, *, vision: bool = False) -> str | None:
    """Why the service would refuse this model x training type x region, or None."""
    kind = canonical_training_type(training_type)
    if kind is None:
        return f"unknown training type {training_type!r}; use one of {', '.join(TRAINING_TYPES)}"
    successor = no_longer_fine_tunable(model)
    if successor is not None:
        return f"{model} is no longer fine-tunable on Azure OpenAI (not in the supported-models table); use {successor}"
    row = base_model(model)
    if row is None:
        known = ", ".join(r.short for r in BASE_MODELS)
        return f"{model} is not an Azure OpenAI model that can be fine-tuned (known: {known})"
    regions = row.training_regions(kind)
    if not regions:
        offered = [t for t in TRAINING_TYPES if row.training_regions(t)]
        return f"{row.dated_id} has no {kind} training (offered: {', '.join(offered)})"
    region = normalise_region(region)
    if region and region not in regions:
        return f"{kind} training of {row.dated_id} is not offered in {region}; it is in: {', '.join(regions)}"
    if kind in ("GlobalStandard", "developerTier") and region:
        if region == "uaenorth" and row.dated_id.lower() not in UAE_NORTH_ONLY:
            return GLOBAL_TRAINING_CAVEATS["uaenorth"]
        if region == "polandcentral" and row.short == "gpt-4.1-nano":
            return GLOBAL_TRAINING_CAVEATS["polandcentral"]
        if region == "japaneast" and vision:
            return GLOBAL_TRAINING_CAVEATS["japaneast"]
    return None


# ------------------------------------------------------------------ deployments
DEPLOYMENT_SKUS = ("Standard", "GlobalStandard", "DeveloperTier", "ProvisionedManaged")
#: fine-tune-standard-deployment-regions.md (10/07/2026): NOT the Standard training regions
STANDARD_DEPLOYMENT_REGIONS = {
    "gpt-4o-mini": _NCUS_SWC, "gpt-4o": ("eastus2", "swedencentral"), "gpt-4.1": _NCUS_SWC,
    "gpt-4.1-mini": _NCUS_SWC, "gpt-4.1-nano": _NCUS_SWC, "o4-mini": ("eastus2", "swedencentral"), "gpt-5": _NCUS_SWC,
}
#: fine-tune-provisioned-throughput-deployment-regions.md (10/07/2026)
PTU_DEPLOYMENT_REGIONS = {"gpt-4o-mini": _NCUS_SWC, "gpt-4o": _NCUS_SWC, "gpt-4.1": ("swedencentral",)}
#: fine-tuning-deploy.md (02/11/2026): Developer deployments, all regions
DEVELOPER_DEPLOYMENT_MODELS = ("o4-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano")
#: fine-tuning-deploy.md (02/11/2026): Global standard deployments, all regions
GLOBAL_DEPLOYMENT_MODELS = ("o4-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini")
HOSTING_USD_PER_HOUR = {"Standard": 1.70, "GlobalStandard": 1.70, "DeveloperTier": 0.0}  # ProvisionedManaged: PTU
HOSTING_PRICE_SOURCE = COST_SOURCE
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


def sku_regions(short: str, sku: str) -> tuple[str, ...] | None:
    """The regions ``sku`` deployments of ``short`` fine-tunes are offered in; None = every region; () = none."""
    if sku == "Standard":
        return STANDARD_DEPLOYMENT_REGIONS.get(short, ())
    if sku == "ProvisionedManaged":
        return PTU_DEPLOYMENT_REGIONS.get(short, ())
    if sku == "DeveloperTier":
        return None if short in DEVELOPER_DEPLOYMENT_MODELS else ()
    return None if short in GLOBAL_DEPLOYMENT_MODELS else ()


def deployment_refusal(model: str, sku: str, region: str | None) -> str | None:
    """Why ARM would refuse to deploy a model fine-tuned from ``model`` with ``sku`` in ``region``."""
    known = canonical_sku(sku)
    if known is None:
        hint = " (ARM's name for the developer tier is DeveloperTier)" if sku.lower() == "developer" else ""
        return f"the SKU {sku!r} is not one Azure offers for fine-tuned models{hint}: use {', '.join(DEPLOYMENT_SKUS)}"
    row = base_model(model)
    region = normalise_region(region)
    if row is None or row.open_weight:
        return None
    regions = sku_regions(row.short, known)
    source = {"Standard": STANDARD_DEPLOY_SOURCE, "ProvisionedManaged": PTU_DEPLOY_SOURCE}.get(known, DEPLOY_SOURCE)
    if regions == ():
        offered = [s for s in DEPLOYMENT_SKUS if sku_regions(row.short, s) != ()]
        return f"{known} deployments are not offered for {row.short} fine-tunes (offered: {', '.join(offered)}; {source})"
    if regions is not None and region and region not in regions:
        return (f"{known} deployments of {row.short} fine-tunes are offered in {', '.join(regions)}, not {region} "
                f"({source})")
    return None


def default_sku(model: str, region: str | None) -> tuple[str, str]:
    """(sku, the reason in one sentence) for a model fine-tuned from ``model`` in ``region``, from the
    deployment tables (not the training regions)."""
    row = base_model(model)
    region = normalise_region(region)
    if row is not None and not row.open_weight:
        standard = sku_regions(row.short, "Standard") or ()
        if region and region in standard:
            return "Standard", (f"Standard: {row.short} fine-tunes deploy regionally in {region} "
                                f"({STANDARD_DEPLOY_SOURCE}), so data stays in the region")
        if sku_regions(row.short, "GlobalStandard") == ():
            return "DeveloperTier", f"DeveloperTier: the only deployment type offered for {row.short} fine-tunes"
        if region:
            where = ", ".join(standard) or "no region"
            return "GlobalStandard", (f"GlobalStandard: Standard deployments of {row.short} fine-tunes are offered only "
                                      f"in {where} ({STANDARD_DEPLOY_SOURCE}) and this resource is in {region}")
    return "GlobalStandard", "GlobalStandard: the resource's region is unknown and GlobalStandard works in every region"


def hosting_note(sku: str) -> str:
    price = HOSTING_USD_PER_HOUR.get(sku)
    if price is None:
        return f"{sku}: billed per provisioned throughput unit (PTU) hour, see {HOSTING_PRICE_SOURCE}"
    if price == 0:
        return f"{sku}: no hourly hosting fee, tokens only ({HOSTING_PRICE_SOURCE})"
    return f"{sku}: hosting ~${price:.2f}/hour while deployed, used or not ({HOSTING_PRICE_SOURCE})"


# ------------------------------------------------------------------ retirements
@dataclass(frozen=True)
class FineTuneRetirement:
    short: str
    base_retires: date  # the base model's own retirement (training stops then for new customers)
    training_no_earlier_than: date  # existing customers only
    deployments_retire: date  # fine-tuned deployments stop serving


#: concepts-model-retirement-schedule-content.md (07/07/2026), "Fine-tuned models" and the base-model table
RETIREMENTS: tuple[FineTuneRetirement, ...] = (
    FineTuneRetirement("gpt-4.1", date(2026, 10, 14), date(2027, 4, 14), date(2027, 10, 14)),
    FineTuneRetirement("gpt-4.1-mini", date(2026, 10, 14), date(2027, 4, 14), date(2027, 10, 14)),
    FineTuneRetirement("gpt-4.1-nano", date(2026, 10, 14), date(2027, 4, 14), date(2027, 10, 14)),
    FineTuneRetirement("gpt-4o", date(2026, 10, 1), date(2027, 4, 1), date(2027, 10, 1)),
    FineTuneRetirement("gpt-4o-mini", date(2026, 10, 1), date(2027, 4, 1), date(2027, 10, 1)),
    FineTuneRetirement("o4-mini", date(2026, 10, 16), date(2027, 4, 16), date(2027, 10, 16)),
)


def retirement(model: str) -> FineTuneRetirement | None:
    row = base_model(model)
    return next((r for r in RETIREMENTS if row is not None and r.short == row.short), None)


def retirement_note(model: str, today: date) -> str | None:
    """One sentence on when fine-tunes of ``model`` stop, for run / deploy / providers."""
    found = retirement(model)
    if found is None:
        return None
    training = (f"training is offered to existing customers until no earlier than {found.training_no_earlier_than} "
                f"(new customers: it retired with the base model on {found.base_retires})"
                if today >= found.base_retires else
                f"training retires with the base model on {found.base_retires} (existing customers: no earlier than "
                f"{found.training_no_earlier_than})")
    return (f"Azure fine-tunes of {found.short} stop serving on {found.deployments_retire}; {training} "
            f"({RETIREMENT_SOURCE}).")
