"""Azure AI Foundry serverless (models-as-a-service) fine-tuning: which catalog models can be
fine-tuned where, which are retired, and what replaces them. Read by the Azure provider (refusal
before any upload) and the Azure emulator (which refuses the same).

Sources (MicrosoftDocs/azure-ai-docs, ``articles/ai-foundry/``):

* ``includes/region-availability-maas.md`` (2025-11-24): fine-tuning of Phi-4, Phi-4-mini-instruct,
  Phi-4-multimodal-instruct and Ministral-3B in East US 2, East US, North Central US, South Central US,
  West US and West US 3; Meta Llama 3.1-8B, 3.2 Vision and 3.3-70B in West US 3 only; Phi-4-reasoning and
  Phi-4-mini-reasoning are not fine-tunable.
* ``concepts/model-lifecycle-retirement.md``: every Phi-3 / Phi-3.5 serverless model retired on
  2025-08-30, Meta-Llama-3.1-70B-Instruct on 2025-06-30, Mistral-Nemo on 2026-01-30.
* ``articles/foundry/openai/includes/concepts-retired-models-content.md`` (ms.date 04/23/2026): Mistral-large-2411
  retired 2026-01-30 (suggested replacement Mistral-medium-2505, which is not fine-tunable); Phi-3-medium's
  suggested replacement is Phi-4, the other Phi-3 / Phi-3.5 models' Phi-4-mini-instruct.
* ``articles/foundry/openai/includes/concepts-model-retirement-schedule-content.md`` (ms.date 07/07/2026):
  Meta-Llama-3.1-8B-Instruct, Llama-3.2-11B-Vision-Instruct and Llama-3.2-90B-Vision-Instruct retire 2026-06-13.
* ``how-to/fine-tune-serverless.md`` (01/28/2026): the job is created from the versioned registry id,
  the fine-tuned model is deployed with ``model_id=azureml://locations/{location}/workspaces/
  {workspace_id}/models/{name}/versions/1``, one serverless deployment per custom model, chat at
  ``{scoring_uri}/v1/chat/completions`` with the endpoint key.
"""

from __future__ import annotations

from dataclasses import dataclass

AS_OF = "2025-11-24"
REGIONS_SOURCE = "MicrosoftDocs/azure-ai-docs articles/ai-foundry/includes/region-availability-maas.md (2025-11-24)"
RETIREMENT_SOURCE = ("MicrosoftDocs/azure-ai-docs articles/ai-foundry/concepts/model-lifecycle-retirement.md; "
                     "articles/foundry/openai/includes/concepts-retired-models-content.md (ms.date 04/23/2026) and "
                     "concepts-model-retirement-schedule-content.md (ms.date 07/07/2026)")

_SIX = ("eastus2", "eastus", "northcentralus", "southcentralus", "westus", "westus3")


@dataclass(frozen=True)
class ServerlessModel:
    name: str  # the catalog name, as the registry spells it
    registry: str
    regions: tuple[str, ...]
    marketplace: bool  # third-party: needs an Azure Marketplace subscription in the project


FINE_TUNABLE: tuple[ServerlessModel, ...] = (
    ServerlessModel("Phi-4", "azureml", _SIX, False),
    ServerlessModel("Phi-4-mini-instruct", "azureml", _SIX, False),
    ServerlessModel("Phi-4-multimodal-instruct", "azureml", _SIX, False),
    ServerlessModel("Ministral-3B", "azureml-mistral", _SIX, True),
    ServerlessModel("Llama-3.3-70B-Instruct", "azureml-meta", ("westus3",), True),
)

NOT_FINE_TUNABLE = ("Phi-4-reasoning", "Phi-4-mini-reasoning")


@dataclass(frozen=True)
class Retirement:
    prefix: str  # lower-case name prefix the retirement covers
    retired_on: str
    successor: str  # the nearest fine-tunable model on Azure
    suggested: str | None = None  # the docs' suggested replacement, when it is not fine-tunable itself


RETIRED: tuple[Retirement, ...] = (  # first match wins: the more specific prefix first
    Retirement("phi-3-medium", "2025-08-30", "Phi-4"),
    Retirement("phi-3", "2025-08-30", "Phi-4-mini-instruct"),  # phi-3 and phi-3.5, every other size
    Retirement("mistral-large-2411", "2026-01-30", "Ministral-3B", "Mistral-medium-2505"),
    Retirement("meta-llama-3.1-8b-instruct", "2026-06-13", "Llama-3.3-70B-Instruct"),
    Retirement("llama-3.2-11b-vision-instruct", "2026-06-13", "Phi-4-multimodal-instruct"),
    Retirement("llama-3.2-90b-vision-instruct", "2026-06-13", "Phi-4-multimodal-instruct"),
    Retirement("meta-llama-3.1-70b", "2025-06-30", "Llama-3.3-70B-Instruct"),
    Retirement("mistral-nemo", "2026-01-30", "Ministral-3B"),
)


def model_name(model: str) -> str:
    """'azureml://registries/azureml/models/Phi-4-mini-instruct/versions/2' -> 'Phi-4-mini-instruct'."""
    if "/models/" in model:
        return model.split("/models/", 1)[1].split("/", 1)[0]
    return model.split(":", 1)[-1] if model.startswith("azureml:") else model


def lookup(model: str) -> ServerlessModel | None:
    """The fine-tunable model of that exact name (no prefix matching: ``Phi-4`` is not ``Phi-4-reasoning``)."""
    wanted = model_name(model).lower()
    return next((m for m in FINE_TUNABLE if m.name.lower() == wanted), None)


def retirement(model: str) -> Retirement | None:
    name = model_name(model).lower()
    return next((r for r in RETIRED if name.startswith(r.prefix)), None)


def refusal(model: str, region: str | None) -> str | None:
    """Why serverless fine-tuning of ``model`` in ``region`` would be refused, or None."""
    name = model_name(model)
    retired = retirement(name)
    if retired is not None:
        return f"{name} was retired on {retired.retired_on}"
    if name.lower() in (n.lower() for n in NOT_FINE_TUNABLE):
        return f"{name} cannot be fine-tuned"
    found = lookup(name)
    if found is None:
        return f"{name} is not a model Azure fine-tunes serverless (known: {', '.join(m.name for m in FINE_TUNABLE)})"
    region = str(region or "").replace(" ", "").lower()
    if region and region not in found.regions:
        return f"serverless fine-tuning of {found.name} is not available in {region}; it is in: {', '.join(found.regions)}"
    return None
