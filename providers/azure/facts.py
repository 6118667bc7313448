"""What the Azure provider declares about itself (:class:`cloudtune.provider_facts.ProviderFacts`):
its data rules, its base models (Azure OpenAI route and serverless Phi) with training context and
dated prices, and the rows of ``cloudtune providers`` built from :mod:`cloudtune.service_facts`.
The core reaches these only through ``AzureProvider.facts``."""

from __future__ import annotations

from typing import Any

from cloudtune.catalog import MB, hosted_model
from cloudtune.provider_facts import SPECIAL_TOKENS, ModelInfo, ProviderDataRules, ProviderFacts
from cloudtune.service_facts import azure_openai, azure_serverless, openai_lifecycle
# Azure OpenAI lists the same Global token prices as OpenAI (hosting fee apart): see openai_models
from cloudtune.service_facts.openai_models import INFERENCE_PRICE_DATE, INFERENCE_PRICE_SOURCE, INFERENCE_PRICES

PRICE_SOURCE = (
    "https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/ "
    "(fine-tuning, Global/Standard training per 1M tokens)"
)
CONTEXT_SOURCE = (
    "https://learn.microsoft.com/azure/ai-foundry/openai/how-to/fine-tuning "
    "(same per-example limits as OpenAI) and the Azure AI Foundry model catalog for Phi"
)
PRICE_DATE = "2025-06-01"

DATA_RULES = ProviderDataRules(
    min_examples=10,
    max_file_bytes=512 * MB,
    max_upload_bytes=512 * MB,
    # Azure's fine-tuning docs: "must be encoded in UTF-8 and include a byte-order mark (BOM)".
    bom="required",
    special_tokens_are_errors=True,
    multimodal=True,
    special_tokens=SPECIAL_TOKENS,
    notes="Azure OpenAI / AI Foundry: 512 MB per training file; UTF-8 with BOM documented.",
)


_OPENAI_ROUTE = [
    # Azure names the deployable base models without the date suffix plus a
    # version; accept both spellings. Prices are Global training list prices
    # (regional training is typically ~10% higher): override when you know yours.
    # Methods and the fine-tunable list: cloudtune.service_facts.azure_openai (fine-tune-supported-models.md,
    # 03/05/2026): gpt-4o-mini is SFT only on Azure, gpt-35-turbo is no longer fine-tunable there, and
    # gpt-4.1-nano's training examples are up to 32,768 tokens on Azure (issue 19's figure: the pages read on
    # 2026-12-04 give no per-model example limit, so it is kept as reported, not re-verified).
    ("gpt-4.1-2025-04-14", ["gpt-4.1"], 65_536, "o200k_base", 25.00, ("supervised", "dpo"), ""),
    ("gpt-4.1-mini-2025-04-14", ["gpt-4.1-mini"], 65_536, "o200k_base", 5.00, ("supervised", "dpo"), ""),
    ("gpt-4.1-nano-2025-04-14", ["gpt-4.1-nano"], 32_768, "o200k_base", 1.50, ("supervised", "dpo"), ""),
    ("gpt-4o-2024-08-06", ["gpt-4o"], 65_536, "o200k_base", 25.00, ("supervised", "dpo"), ""),
    ("gpt-4o-mini-2024-07-18", ["gpt-4o-mini"], 65_536, "o200k_base", 3.00, ("supervised",), ""),
]

# Phi models fine-tuned serverless (models-as-a-service) in Azure AI Foundry.
# Context is the model's context window from its model card; serverless
# fine-tuning is billed per token by the Marketplace offer, which varies by
# region, so no price is recorded: pass one via ``prices`` to get a cost.
# Phi-3 / Phi-3.5 serverless models were retired on 2025-08-30 (cloudtune.service_facts.azure_serverless):
# the provider refuses them before upload, so they are not listed here.
_PHI = [
    ("Phi-4", [], 16_384),
    ("Phi-4-mini-instruct", [], 131_072),
    ("Phi-4-multimodal-instruct", [], 131_072),
]


MODELS: tuple[ModelInfo, ...] = (
    *(hosted_model("azure", name, aliases, ctx, tok, price, methods, notes, price_date=PRICE_DATE,
                   price_source=PRICE_SOURCE, context_source=CONTEXT_SOURCE, inference_prices=INFERENCE_PRICES.get(name),
                   inference_price_date=INFERENCE_PRICE_DATE, inference_price_source=INFERENCE_PRICE_SOURCE)
      for name, aliases, ctx, tok, price, methods, notes in _OPENAI_ROUTE),
    *(ModelInfo(provider="azure", name=name, aliases=tuple(aliases), context_tokens=ctx, tokenizer=None,
                methods=("supervised",),
                notes="Serverless (MaaS) fine-tuning; price depends on the Marketplace offer, pass it via prices.",
                context_source="Azure AI Foundry model catalog / Hugging Face model card")
      for name, aliases, ctx in _PHI),
)


def azure_rows() -> list[dict[str, Any]]:
    """Rows of ``cloudtune providers`` for Azure: both routes, from the dated service tables."""
    from datetime import date

    today = openai_lifecycle.today()
    rows = []
    for model in azure_openai.BASE_MODELS:
        types = [t for t in azure_openai.TRAINING_TYPES if model.training_regions(t)]
        methods = "/".join({"supervised": "SFT", "dpo": "DPO", "reinforcement": "RFT"}[m] for m in model.methods)
        if model.open_weight:
            where = (f"{methods}; training {'/'.join(types)}; jobs API on Foundry resources only "
                     "(a classic hub: the serverless route, where it lists the model)")
        else:
            deploy = azure_openai.STANDARD_DEPLOYMENT_REGIONS.get(model.short, ())
            where = (f"{methods}; training {'/'.join(types)}; Standard training in {', '.join(model.standard_regions)}; "
                     f"Standard deployments in {', '.join(deploy) or 'none'}")
        retiring = azure_openai.retirement(model.short)
        dates = (f"fine-tunes stop serving {retiring.deployments_retire}; training (existing customers) until no "
                 f"earlier than {retiring.training_no_earlier_than}" if retiring else f"listed {azure_openai.RULES_AS_OF}")
        if retiring and retiring.deployments_retire <= today:
            status = "retired"
        else:
            status = "fine-tunable" + (" (by invitation)" if model.gated else "")
        rows.append({"model": model.dated_id, "route": "azure-openai", "status": status, "where": where,
                     "dates": dates + f"; DeveloperTier deployments live {azure_openai.DEVELOPER_TIER_LIFETIME_H} h; "
                              f"idle deployments deleted after {azure_openai.IDLE_DELETION_DAYS} days",
                     "instead": None, "source": azure_openai.RETIREMENT_SOURCE if retiring else azure_openai.MODELS_SOURCE})
    for model in azure_serverless.FINE_TUNABLE:
        also = azure_openai.base_model(model.name)
        why = (" (also on the jobs API on a Foundry resource: -o route=openai)" if also is not None and also.open_weight
               else " (only this route offers it)")
        rows.append({"model": model.name, "route": "serverless", "status": "fine-tunable",
                     "where": ", ".join(model.regions) + (" (marketplace)" if model.marketplace else "") + why,
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": None, "source": azure_serverless.REGIONS_SOURCE})
    for name in azure_serverless.NOT_FINE_TUNABLE:
        rows.append({"model": name, "route": "serverless", "status": "not fine-tunable", "where": "-",
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": "Phi-4-mini-instruct",
                     "source": azure_serverless.REGIONS_SOURCE})
    for retired in azure_serverless.RETIRED:
        gone = date.fromisoformat(retired.retired_on) <= today
        rows.append({"model": f"{retired.prefix}*", "route": "serverless", "status": "retired" if gone else "retiring",
                     "where": f"use {retired.successor} (or --provider local)",
                     "dates": f"retired {retired.retired_on}" if gone else f"retires {retired.retired_on}",
                     "instead": retired.successor, "source": azure_serverless.RETIREMENT_SOURCE})
    return rows


FACTS = ProviderFacts(data_rules=DATA_RULES, models=MODELS, request_concurrency=4, model_rows=azure_rows)
