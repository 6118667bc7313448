"""What the OpenAI provider declares about itself (:class:`cloudtune.provider_facts.ProviderFacts`):
its data rules, its fine-tunable models with training context and dated prices, and the rows of
``cloudtune providers``. The core reaches these only through ``OpenAIProvider.facts``."""

from __future__ import annotations

from typing import Any

from cloudtune.catalog import GB, MB, hosted_model
from cloudtune.provider_facts import SPECIAL_TOKENS, ModelInfo, ProviderDataRules, ProviderFacts
from cloudtune.service_facts import openai_lifecycle
from cloudtune.service_facts.openai_models import (CONTEXT_SOURCE, FINE_TUNABLE, INFERENCE_PRICE_DATE, INFERENCE_PRICE_SOURCE,
                                                    INFERENCE_PRICES, PRICE_DATE, PRICE_SOURCE)

DATA_RULES = ProviderDataRules(
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
)


MODELS: tuple[ModelInfo, ...] = tuple(
    hosted_model("openai", name, aliases, ctx, tok, price, methods, notes, price_date=PRICE_DATE,
                 price_source=PRICE_SOURCE, context_source=CONTEXT_SOURCE, inference_prices=INFERENCE_PRICES.get(name),
                 inference_price_date=INFERENCE_PRICE_DATE, inference_price_source=INFERENCE_PRICE_SOURCE)
    for name, aliases, ctx, tok, price, methods, notes in FINE_TUNABLE)


def openai_rows() -> list[dict[str, Any]]:
    """Rows of ``cloudtune providers`` for OpenAI: each model of the table with its shutdown dates."""
    today = openai_lifecycle.today()
    rows = []
    for info in MODELS:
        stops = openai_lifecycle.table_shutdown(info.name)
        gone = stops is not None and stops <= today
        dates = (f"shut down {stops}" if gone else
                 f"job creation ends {openai_lifecycle.JOB_CREATION_ENDS}; fine-tunes stop serving {stops}" if stops else
                 f"job creation ends {openai_lifecycle.JOB_CREATION_ENDS}")
        rows.append({"model": info.name, "route": "openai", "status": "shut down" if gone else "fine-tunable",
                     "where": ", ".join(info.methods), "dates": dates, "instead": "--provider azure" if gone else None,
                     "source": openai_lifecycle.SOURCE})
    return rows


FACTS = ProviderFacts(data_rules=DATA_RULES, models=MODELS, request_concurrency=8, model_rows=openai_rows)

#: why ``--method reinforcement`` is refused here (cloudtune.service_facts.openai_lifecycle)
NO_REINFORCEMENT = "OpenAI shut o4-mini, its reinforcement fine-tuning model, down on 2026-10-23"
