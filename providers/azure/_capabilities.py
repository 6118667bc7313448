"""What Azure can fine-tune where: data, dated, with sources.

Two routes, chosen by the base model (see :func:`route_for_model`):

* ``openai``: Azure OpenAI models (``gpt-4o-mini``, ``gpt-4.1`` family, ``gpt-35-turbo``),
  fine-tuned through the Azure OpenAI data plane with ``openai.AzureOpenAI``.
* ``serverless``: catalog models (Phi-3 / Phi-4, Llama, Mistral...) fine-tuned as
  serverless ("models as a service") jobs in a hub-based Foundry project with ``azure-ai-ml``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Azure OpenAI base models that can be fine-tuned (regions per Microsoft's model table).
AOAI_SOURCE = "https://learn.microsoft.com/azure/ai-foundry/openai/concepts/models#fine-tuning-models"
AOAI_LISTED_ON = "2025-06-01"
AOAI_FINE_TUNABLE: dict[str, tuple[str, ...]] = {
    "gpt-35-turbo": ("eastus2", "northcentralus", "swedencentral", "switzerlandwest"),
    "gpt-4o-mini": ("northcentralus", "swedencentral"),
    "gpt-4o": ("eastus2", "northcentralus", "swedencentral"),
    "gpt-4.1": ("northcentralus", "swedencentral"),
    "gpt-4.1-mini": ("northcentralus", "swedencentral"),
    "gpt-4.1-nano": ("northcentralus", "swedencentral"),
}


@dataclass(frozen=True)
class ServerlessModel:
    family: str
    regions: tuple[str, ...]
    needs_marketplace: bool
    listed_on: str
    source: str


SERVERLESS_SOURCE = "https://learn.microsoft.com/azure/ai-foundry/how-to/fine-tune-serverless"
#: Serverless fine-tuning regions by model family, as Microsoft listed them on ``listed_on``.
#: Phi-3: East US 2 only. Other families: the regions of the same page on that date.
SERVERLESS_MODELS: dict[str, ServerlessModel] = {
    "phi-3": ServerlessModel("phi-3", ("eastus2",), False, "2025-05-15", SERVERLESS_SOURCE),
    "phi-4": ServerlessModel("phi-4", ("eastus", "eastus2", "northcentralus", "southcentralus", "westus", "westus3"),
                             False, "2025-05-15", SERVERLESS_SOURCE),
    "meta-llama": ServerlessModel("meta-llama", ("westus3",), True, "2025-05-15", SERVERLESS_SOURCE),
    "ministral": ServerlessModel("ministral", ("eastus2", "swedencentral"), True, "2025-05-15", SERVERLESS_SOURCE),
    "mistral": ServerlessModel("mistral", ("eastus2", "swedencentral"), True, "2025-05-15", SERVERLESS_SOURCE),
}
#: the registry each family's catalog models live in
REGISTRY_OF = {"phi-3": "azureml", "phi-4": "azureml", "meta-llama": "azureml-meta", "ministral": "azureml-mistral",
               "mistral": "azureml-mistral"}

_AOAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "davinci", "babbage")


def model_name(model: str) -> str:
    """'azureml://registries/azureml/models/Phi-4-mini-instruct/versions/2' -> 'Phi-4-mini-instruct'."""
    if "/models/" in model:
        return model.split("/models/", 1)[1].split("/", 1)[0]
    return model.split(":", 1)[-1] if model.startswith("azureml:") else model


def serverless_family(model: str) -> ServerlessModel | None:
    name = model_name(model).lower()
    for prefix, entry in SERVERLESS_MODELS.items():
        if name.startswith(prefix):
            return entry
    return None


def route_for_model(model: str | None) -> str | None:
    """'openai' for Azure OpenAI base models, 'serverless' for catalog models, None if unknown."""
    if not model:
        return None
    name = model_name(model).lower()
    if name.startswith(_AOAI_PREFIXES) or model.startswith("azure-openai:"):
        return "openai"
    return "serverless"


def catalog_model_uri(model: str) -> str:
    """A catalog model as azure-ai-ml's fine-tuning wants it: an azureml registry URI."""
    if model.startswith("azureml://"):
        return model
    family = serverless_family(model)
    registry = REGISTRY_OF.get(family.family if family else "", "azureml")
    return f"azureml://registries/{registry}/models/{model}"
