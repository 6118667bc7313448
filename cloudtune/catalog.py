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
                 price_source: str, context_source: str, inference_prices=None, inference_price_date: str | None = None,
                 inference_price_source: str | None = None) -> ModelInfo:
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
        inference_prices=inference_prices,
        inference_price_date=inference_price_date if inference_prices is not None else None,
        inference_price_source=inference_price_source if inference_prices is not None else None,
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


def inference_price_for(provider: str, model: str | None, *, fine_tuned: bool) -> tuple[float, float, str, str] | None:
    """(USD per 1M input tokens, per 1M output tokens, date, source) for chatting with
    ``model`` (a base model name or alias) on ``provider``, from the model table the provider
    declares; None when unpriced."""
    info = lookup_model(provider, model)
    prices = info.inference_prices if info is not None else None
    if prices is None:
        return None
    price_in, price_out = prices[1] if fine_tuned else prices[0]
    return price_in, price_out, str(info.inference_price_date), str(info.inference_price_source)

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
