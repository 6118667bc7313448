"""What Azure can fine-tune where, for the provider: routing by base model and the tables of
:mod:`cloudtune.service_facts` (dated, with sources, shared with the emulator).

Two routes, chosen by the base model (see :func:`route_for_model`):

* ``openai``: Azure OpenAI models (``gpt-4.1`` family, ``gpt-4o``, ``gpt-4o-mini``, ``o4-mini``),
  fine-tuned on the Azure OpenAI data plane (v1 surface by default).
* ``serverless``: catalog models (Phi-4 family, Ministral, Llama 3.x) fine-tuned as serverless
  ("models as a service") jobs in a hub-based Foundry project with ``azure-ai-ml``.
"""

from __future__ import annotations

from cloudtune.service_facts import azure_openai, azure_serverless
from cloudtune.service_facts.azure_serverless import model_name

__all__ = ["catalog_model_uri", "model_name", "retired_refusal", "route_for_model", "serverless_model"]

AOAI_LISTED_ON = azure_openai.RULES_AS_OF
SERVERLESS_LISTED_ON = azure_serverless.AS_OF
_AOAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "davinci", "babbage")


def serverless_model(model: str) -> azure_serverless.ServerlessModel | None:
    return azure_serverless.lookup(model)


def route_for_model(model: str | None, has_endpoint: bool | None = None, has_project: bool | None = None) -> str | None:
    """'openai' for Azure OpenAI base models, 'serverless' for catalog models, None if unknown. The
    open-weight models the jobs API fine-tunes on Foundry resources (Ministral-3B, Qwen-32B,
    Llama-3.3-70B-Instruct, gpt-oss-20b; fine-tune-supported-models.md, 03/05/2026): those only the jobs API
    offers (Qwen-32B, gpt-oss-20b) take the openai route; those the serverless route lists too (Ministral-3B,
    Llama-3.3-70B-Instruct) stay serverless when a hub-based project is configured, and take the openai
    route when only an Azure OpenAI / Foundry endpoint is (``-o route=`` decides otherwise)."""
    if not model:
        return None
    import os

    if has_endpoint is None:
        has_endpoint = bool(os.environ.get("AZURE_OPENAI_ENDPOINT"))
    if has_project is None:
        has_project = bool(os.environ.get("AZURE_AI_PROJECT"))
    name = model_name(model).lower()
    row = azure_openai.base_model(name)
    if row is not None and row.open_weight:
        if serverless_model(name) is None:
            return "openai"
        return "openai" if has_endpoint and not has_project else "serverless"
    if name.startswith(_AOAI_PREFIXES) or model.startswith("azure-openai:"):
        return "openai"
    return "serverless"


def catalog_model_uri(model: str) -> str:
    """A catalog model as azure-ai-ml's fine-tuning wants it: an azureml registry URI."""
    if model.startswith("azureml://"):
        return model
    found = serverless_model(model)
    registry = found.registry if found else "azureml"
    return f"azureml://registries/{registry}/models/{found.name if found else model}"


def retired_refusal(model: str, region: str | None) -> tuple[str, str] | None:
    """(message, hint) for a retired serverless model: the two ways forward, named exactly."""
    retired = azure_serverless.retirement(model)
    if retired is None:
        return None
    name = model_name(model)
    where = f" in {region}" if region else " in your project's region"
    successor = serverless_model(retired.successor)
    offered = f" (fine-tunable in {', '.join(successor.regions)})" if successor else ""
    suggested = (f" (Microsoft suggests {retired.suggested} for inference; it cannot be fine-tuned)"
                 if retired.suggested else "")
    message = (f"{name} was retired from Azure AI Foundry serverless on {retired.retired_on}: it can no longer be "
               f"fine-tuned there{suggested}. Nothing was uploaded.")
    hint = (f"Use {retired.successor}{where}{offered}: `--model {retired.successor}`; or fine-tune the same model "
            f"locally: `--provider local --model {name}`. Source: {azure_serverless.RETIREMENT_SOURCE}.")
    return message, hint
