"""What cloudtune knows about models and providers, as data.

Two tables live here, read by the dataset validator, the providers and the
cost estimate:

* ``MODELS``: every base model we know how to fine-tune, per provider, with its
  training context, tokenizer, supported methods and training price. Each price
  carries the date it was read and where from, because prices change and the
  estimate printed to the user must say how old its figure is.
* ``PROVIDER_RULES``: what each provider accepts in a training file (minimum
  example count, size limits, byte-order mark, special tokens, multimodal parts).

Figures are as published by the vendors on the dates given; they are
estimates for planning and can be overridden (``prices=`` everywhere a cost is
computed, ``prices:`` in a run config).
"""

from __future__ import annotations

from cloudtune.provider_facts import SPECIAL_TOKENS, ModelInfo, ProviderDataRules, find_model

MB = 1024 * 1024
GB = 1024 * MB

OPENAI_PRICE_SOURCE = "https://openai.com/api/pricing/ (fine-tuning, training price per 1M tokens)"
OPENAI_CONTEXT_SOURCE = "https://platform.openai.com/docs/guides/fine-tuning (token limits per example)"
AZURE_PRICE_SOURCE = (
    "https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/ "
    "(fine-tuning, Global/Standard training per 1M tokens)"
)
AZURE_CONTEXT_SOURCE = (
    "https://learn.microsoft.com/azure/ai-foundry/openai/how-to/fine-tuning "
    "(same per-example limits as OpenAI) and the Azure AI Foundry model catalog for Phi"
)
PRICE_DATE = "2025-06-01"


# ModelInfo, ProviderDataRules and SPECIAL_TOKENS live with the rest of what a provider declares
# (cloudtune/provider_facts.py) and are read here under their old names.


PROVIDER_RULES: dict[str, ProviderDataRules] = {
    "openai": ProviderDataRules(
        min_examples=10,
        max_file_bytes=512 * MB,
        max_upload_bytes=8 * GB,
        # OpenAI documents UTF-8 JSONL; its processing marks a file with a leading BOM "error", so the
        # upload copy is written without one.
        bom="refused",
        special_tokens_are_errors=True,
        multimodal=True,
        special_tokens=SPECIAL_TOKENS,
        notes="Files API takes up to 512 MB; larger files go through the Uploads API (up to 8 GB).",
    ),
    "azure": ProviderDataRules(
        min_examples=10,
        max_file_bytes=512 * MB,
        max_upload_bytes=512 * MB,
        # Azure's fine-tuning docs: "must be encoded in UTF-8 and include a byte-order mark (BOM)".
        bom="required",
        special_tokens_are_errors=True,
        multimodal=True,
        special_tokens=SPECIAL_TOKENS,
        notes="Azure OpenAI / AI Foundry: 512 MB per training file; UTF-8 with BOM documented.",
    ),
    "local": ProviderDataRules(
        min_examples=1,
        max_file_bytes=None,
        max_upload_bytes=None,
        bom="accepted",
        special_tokens_are_errors=False,
        multimodal=False,
        special_tokens=SPECIAL_TOKENS,
        hosted=False,
        notes="Local QLoRA backend: no upload; special tokens are warned about, not refused.",
    ),
}


def provider_rules(provider: str) -> ProviderDataRules:
    """The data rules ``provider`` declares (:mod:`cloudtune.provider_facts`); a name no provider
    answers to gets the documented defaults."""
    from cloudtune.registry import provider_facts

    return provider_facts(provider).data_rules


def _openai(name, aliases, context, tokenizer, price, methods=("supervised", "dpo"), notes="", provider="openai"):
    return ModelInfo(
        provider=provider,
        name=name,
        aliases=tuple(aliases),
        context_tokens=context,
        tokenizer=tokenizer,
        methods=tuple(methods),
        price_per_1m_training_tokens=price,
        price_date=PRICE_DATE if price is not None else None,
        price_source=(OPENAI_PRICE_SOURCE if provider == "openai" else AZURE_PRICE_SOURCE) if price is not None else None,
        notes=notes,
        context_source=OPENAI_CONTEXT_SOURCE if provider == "openai" else AZURE_CONTEXT_SOURCE,
    )


# (name, aliases, training context tokens, tiktoken encoding, USD per 1M training tokens, methods, notes)
_OPENAI_FINETUNABLE = [
    ("gpt-4.1-2025-04-14", ["gpt-4.1"], 65_536, "o200k_base", 25.00, ("supervised", "dpo"), ""),
    ("gpt-4.1-mini-2025-04-14", ["gpt-4.1-mini"], 65_536, "o200k_base", 5.00, ("supervised", "dpo"), ""),
    ("gpt-4.1-nano-2025-04-14", ["gpt-4.1-nano"], 65_536, "o200k_base", 1.50, ("supervised", "dpo"), ""),
    ("gpt-4o-2024-08-06", ["gpt-4o"], 65_536, "o200k_base", 25.00, ("supervised", "dpo"),
     "Vision fine-tuning (image content parts) supported."),
    ("gpt-4o-mini-2024-07-18", ["gpt-4o-mini"], 65_536, "o200k_base", 3.00, ("supervised", "dpo"), ""),
    ("gpt-3.5-turbo-0125", ["gpt-3.5-turbo", "gpt-35-turbo"], 16_385, "cl100k_base", 8.00, ("supervised",), ""),
    ("gpt-3.5-turbo-1106", [], 16_385, "cl100k_base", 8.00, ("supervised",), ""),
    ("gpt-3.5-turbo-0613", [], 4_096, "cl100k_base", 8.00, ("supervised",), "Legacy; 4,096-token examples."),
]

_AZURE_OPENAI = [
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
_AZURE_PHI = [
    ("Phi-4", [], 16_384),
    ("Phi-4-mini-instruct", [], 131_072),
    ("Phi-4-multimodal-instruct", [], 131_072),
]

# Small open models the local QLoRA backend trains. Context from each model's
# config.json (max_position_embeddings); no price: it runs on your hardware.
_LOCAL = [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", ["SmolLM2-135M-Instruct", "smollm2-135m"], 8_192),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", ["SmolLM2-360M-Instruct", "smollm2-360m"], 8_192),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", ["SmolLM2-1.7B-Instruct", "smollm2-1.7b"], 8_192),
    ("Qwen/Qwen2.5-0.5B-Instruct", ["Qwen2.5-0.5B-Instruct"], 32_768),
    ("Qwen/Qwen2.5-1.5B-Instruct", ["Qwen2.5-1.5B-Instruct"], 32_768),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", ["TinyLlama-1.1B-Chat-v1.0"], 2_048),
]


def _build() -> dict[str, tuple[ModelInfo, ...]]:
    models: dict[str, list[ModelInfo]] = {"openai": [], "azure": [], "local": []}
    for name, aliases, ctx, tok, price, methods, notes in _OPENAI_FINETUNABLE:
        models["openai"].append(_openai(name, aliases, ctx, tok, price, methods, notes))
    for name, aliases, ctx, tok, price, methods, notes in _AZURE_OPENAI:
        models["azure"].append(_openai(name, aliases, ctx, tok, price, methods, notes, provider="azure"))
    for name, aliases, ctx in _AZURE_PHI:
        models["azure"].append(
            ModelInfo(
                provider="azure",
                name=name,
                aliases=tuple(aliases),
                context_tokens=ctx,
                tokenizer=None,
                methods=("supervised",),
                notes="Serverless (MaaS) fine-tuning; price depends on the Marketplace offer, pass it via prices.",
                context_source="Azure AI Foundry model catalog / Hugging Face model card",
            )
        )
    for name, aliases, ctx in _LOCAL:
        models["local"].append(
            ModelInfo(
                provider="local",
                name=name,
                aliases=tuple(aliases),
                context_tokens=ctx,
                tokenizer=None,
                methods=("supervised", "dpo"),
                notes="Local QLoRA; token counts use the Hugging Face tokenizer when given a local path.",
                context_source="model config.json max_position_embeddings",
            )
        )
    return {provider: tuple(items) for provider, items in models.items()}


MODELS: dict[str, tuple[ModelInfo, ...]] = _build()

def lookup_model(provider: str, model: str | None) -> ModelInfo | None:
    """Find ``model`` in the model table ``provider`` declares (see :func:`find_model`)."""
    if not model:
        return None
    from cloudtune.registry import provider_facts

    return find_model(provider_facts(provider).models, model)


def price_for(info: ModelInfo | None, prices: dict[str, float] | None = None) -> tuple[float | None, str | None, str | None]:
    """(USD per 1M training tokens, date, source) with ``prices`` overrides
    (keyed by model name or alias) taking precedence over the table."""
    if info is None:
        return None, None, None
    for name in info.names():
        if prices and name in prices:
            return float(prices[name]), "override", "user-supplied prices"
    return info.price_per_1m_training_tokens, info.price_date, info.price_source



# Inference list prices, USD per 1M tokens: (input, output) for the base model and for a
# fine-tuned model of it. Read from https://openai.com/api/pricing/ on PRICE_DATE (standard
# tier, "Fine-tuning" and "Models" tables). Azure OpenAI lists the same Global token prices
# (https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/); its
# hourly hosting fee for a fine-tuned deployment is NOT included in a compare cost.
# Local models run on your hardware and have no price. Used by ``cloudtune compare``.
INFERENCE_PRICE_SOURCE = "https://openai.com/api/pricing/ (standard tier, per 1M tokens; Azure hosting fee excluded)"
_INFERENCE_PRICES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "gpt-4.1-2025-04-14": ((2.00, 8.00), (3.00, 12.00)),
    "gpt-4.1-mini-2025-04-14": ((0.40, 1.60), (0.80, 3.20)),
    "gpt-4.1-nano-2025-04-14": ((0.10, 0.40), (0.20, 0.80)),
    "gpt-4o-2024-08-06": ((2.50, 10.00), (3.75, 15.00)),
    "gpt-4o-mini-2024-07-18": ((0.15, 0.60), (0.30, 1.20)),
    "gpt-3.5-turbo-0125": ((0.50, 1.50), (3.00, 6.00)),
}


def inference_price_for(provider: str, model: str | None, *, fine_tuned: bool) -> tuple[float, float, str, str] | None:
    """(USD per 1M input tokens, per 1M output tokens, date, source) for chatting with
    ``model`` (a base model name or alias) on ``provider``; None when unpriced."""
    info = lookup_model(provider, model)
    prices = _INFERENCE_PRICES.get(info.name) if info is not None else None
    if prices is None:
        return None
    price_in, price_out = prices[1] if fine_tuned else prices[0]
    return price_in, price_out, PRICE_DATE, INFERENCE_PRICE_SOURCE

__all__ = [
    "GB",
    "MB",
    "MODELS",
    "PROVIDER_RULES",
    "SPECIAL_TOKENS",
    "ModelInfo",
    "ProviderDataRules",
    "lookup_model",
    "find_model",
    "inference_price_for",
    "price_for",
    "provider_rules",
]
