"""Preflight of the Azure OpenAI route: what the service would refuse, checked before anything is
uploaded (exit 4 naming what works), and the notes to read before paying. The rules are rows of
:mod:`cloudtune.service_facts.azure_openai` (dated and sourced; the emulator reads the same rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.service_facts import azure_openai as rules
from cloudtune.service_facts import openai_lifecycle
from cloudtune.types import FineTuneSpec


def plan_openai(route: Any, spec: FineTuneSpec) -> list[str]:
    """Before any upload: everything the service would refuse, with what works instead (exit 4):
    a model Azure no longer fine-tunes, a method the model does not take (o4-mini and gpt-5 are RFT
    only), an open-weight model on a classic Azure OpenAI resource, the model x training type x region
    (the service's own answer is the misleading "The specified base model does not support
    fine-tuning"), the Global training caveats; an RFT job's grader and data (:mod:`azure_rft`). Returns
    the notes a user should read before paying."""
    notes = []
    model, resolved = rules.resolve_model(spec.base_model)
    if resolved:
        notes.append(resolved)
    successor = rules.no_longer_fine_tunable(model)
    row = rules.base_model(model)
    method = spec.method.value
    if successor is not None:
        raise _refuse(f"{spec.base_model} is no longer fine-tunable on Azure OpenAI (it is not in the "
                      "supported-models table)", f"Use --model {successor}", "ModelNotFineTunable")
    refused = rules.method_refusal(model, method)
    if refused is not None:
        others = ", ".join(rules.models_for(method)) or "none"
        raise _refuse(refused, f"Use --method {row.methods[0] if row else 'supervised'}, or a model that takes "
                      f"{method} fine-tuning on Azure: {others}", "MethodUnavailable")
    if row is not None and row.gated:
        notes.append(f"{row.short} reinforcement fine-tuning: {row.gated}.")
    if row is not None and row.open_weight:
        notes.extend(_foundry_resource_check(route, row))
    if not route.has_job_features:
        notes.append(f"api_version {route.settings.api_version} has no trainingType: the service trains Standard "
                     "(regional); use the default v1 API to choose.")
        training_type = "Standard"
    else:
        training_type = rules.canonical_training_type(route.training_type) or route.training_type
    region = route.region()
    vision = region == "japaneast" and _has_images(Path(spec.training_file))  # the one region that refuses vision
    refusal = rules.training_refusal(model, training_type, region, vision=vision)
    if refusal is not None:
        other = [t for t in rules.TRAINING_TYPES
                 if row and rules.training_refusal(model, t, region, vision=vision) is None]
        raise _refuse(refusal, (f"Use -o training_type={other[0]} (works in {region})" if other else
                                "Use an Azure OpenAI resource in one of those regions"), "TrainingTypeUnavailable")
    notes.append(f"Azure OpenAI training type {training_type}" + (f" in {region}" if region else "")
                 + (": runs on spare capacity; the service may pause and resume it on its own."
                    if training_type == "developerTier" else
                    f": data stays in the {row.data_zone if row else 'US'} data zone."
                    if training_type == "DataZoneStandard" else "."))
    if training_type != "GlobalStandard" and method != "reinforcement":
        notes.append(f"The estimate below uses Azure's Global training price; {training_type} training is priced "
                     f"{'higher' if training_type in ('Standard', 'DataZoneStandard') else 'lower'} "
                     "(see the Azure OpenAI pricing page).")
    retiring = rules.retirement_note(model, openai_lifecycle.today())
    if retiring:
        notes.append(retiring)
    if method == "reinforcement":
        from providers.azure._rft import plan_reinforcement

        notes.extend(plan_reinforcement(route, spec, row))
    return notes


def _has_images(path: Path, chunk: int = 1 << 20) -> bool:
    """Whether the chat JSONL has image content parts, read in chunks (files go up to 512 MB)."""
    if not path.is_file():
        return False
    needle, tail = b'"image_url"', b""
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle):]
    return False


def _refuse(why: str, hint: str, code: str) -> errors.CapabilityError:
    return errors.CapabilityError(f"Azure OpenAI cannot fine-tune this: {why}. Nothing was uploaded.",
                                  hint=f"{hint}. Source: {rules.MODELS_SOURCE}.", provider="azure", code=code)


def _foundry_resource_check(route: Any, row: rules.BaseModel) -> list[str]:
    """The open-weight models fine-tune "only on Foundry resources" (fine-tune-supported-models.md):
    refuse a classic Azure OpenAI resource; an unknown kind (no ARM access) is left to the service."""
    if not route.settings.get("endpoint", "AZURE_OPENAI_ENDPOINT"):
        raise _refuse(
            f"{row.dated_id} is fine-tuned only through the Azure OpenAI jobs API on a Foundry resource, and no "
            "endpoint is configured (a hub-based project's serverless route does not offer it)",
            "Set AZURE_OPENAI_ENDPOINT (or -o endpoint=) to a Foundry resource, https://<resource>.services.ai.azure.com",
            "FoundryResourceRequired")
    kind = route.account_kind()
    if kind and kind != "aiservices":
        raise _refuse(
            f"{row.dated_id} is fine-tuned through the jobs API only on a Foundry resource (ARM kind AIServices); "
            f"{route.settings.account} is a classic Azure OpenAI resource (kind {kind})",
            "Create a Foundry resource (or upgrade this one to Foundry) and point AZURE_OPENAI_ENDPOINT at it "
            "(https://<resource>.services.ai.azure.com); on a classic hub-based project, the serverless route "
            "(-o route=serverless) fine-tunes the catalog models it lists", "FoundryResourceRequired")
    return [f"{row.dated_id}: an open-weight model, fine-tuned with Global training on this Foundry resource."]
