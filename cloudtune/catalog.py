"""The generic model and data-rule machinery the core reads providers' facts with.

Each provider declares its own data rules and model table (training context, tokenizer, methods,
dated training prices) in its ``facts`` (:mod:`cloudtune.provider_facts`; e.g.
``providers/openai/facts.py``); this module holds no provider's data. It gives:

* :func:`hosted_model`: a builder for a hosted model row with a dated, sourced price;
* :func:`provider_rules` / :func:`lookup_model`: a provider's data rules and a model of its table,
  asked of the provider by name through :func:`cloudtune.registry.provider_facts`;
* :func:`price_for` / :func:`inference_price_for`: training and inference prices, with overrides.

Figures are as published by the vendors on the dates given; they are
estimates for planning and can be overridden (``prices=`` everywhere a cost is
computed, ``prices:`` in a run config).
"""

from __future__ import annotations

from cloudtune.provider_facts import SPECIAL_TOKENS, ModelInfo, ProviderDataRules, find_model

MB = 1024 * 1024
GB = 1024 * MB


# ModelInfo, ProviderDataRules and SPECIAL_TOKENS live with the rest of what a provider declares
# (cloudtune/provider_facts.py) and are read here under their old names.


def provider_rules(provider: str) -> ProviderDataRules:
    """The data rules ``provider`` declares (:mod:`cloudtune.provider_facts`); a name no provider
    answers to gets the documented defaults."""
    from cloudtune.registry import provider_facts

    return provider_facts(provider).data_rules


def hosted_model(provider: str, name: str, aliases, context: int | None, tokenizer: str | None,  # type: ignore[no-untyped-def]
                 price: float | None, methods=("supervised", "dpo"), notes: str = "", *, price_date: str,
                 price_source: str, context_source: str) -> ModelInfo:
    """A hosted model's row: the price carries its date and source only when there is a price."""
    return ModelInfo(
        provider=provider,
        name=name,
        aliases=tuple(aliases),
        context_tokens=context,
        tokenizer=tokenizer,
        methods=tuple(methods),
        price_per_1m_training_tokens=price,
        price_date=price_date if price is not None else None,
        price_source=price_source if price is not None else None,
        notes=notes,
        context_source=context_source,
    )


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
# fine-tuned model of it, keyed by the model's name (whichever provider serves it). Read from
# https://openai.com/api/pricing/ on INFERENCE_PRICE_DATE (standard
# tier, "Fine-tuning" and "Models" tables). Azure OpenAI lists the same Global token prices
# (https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/); its
# hourly hosting fee for a fine-tuned deployment is NOT included in a compare cost.
# Local models run on your hardware and have no price. Used by ``cloudtune compare``.
INFERENCE_PRICE_DATE = "2025-06-01"
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
    return price_in, price_out, INFERENCE_PRICE_DATE, INFERENCE_PRICE_SOURCE

__all__ = [
    "GB",
    "MB",
    "SPECIAL_TOKENS",
    "ModelInfo",
    "ProviderDataRules",
    "hosted_model",
    "lookup_model",
    "find_model",
    "inference_price_for",
    "price_for",
    "provider_rules",
]
