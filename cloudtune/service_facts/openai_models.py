"""OpenAI's fine-tunable base models, as data: training context per example, tokenizer, methods and
the training list price with the date it was read. Read by the OpenAI provider (its model table,
``providers/openai/facts.py``) and by the OpenAI emulator (which fine-tunes the same names and
methods), so both move together.

Sources: the prices from https://openai.com/api/pricing/ and the per-example token limits from
https://platform.openai.com/docs/guides/fine-tuning, read on PRICE_DATE.
"""

from __future__ import annotations

PRICE_SOURCE = "https://openai.com/api/pricing/ (fine-tuning, training price per 1M tokens)"
CONTEXT_SOURCE = "https://platform.openai.com/docs/guides/fine-tuning (token limits per example)"
PRICE_DATE = "2025-06-01"

# Inference list prices, USD per 1M tokens: (input, output) for the base model and for a
# fine-tuned model of it, keyed by the model's name (whichever provider serves it). Read from
# https://openai.com/api/pricing/ on INFERENCE_PRICE_DATE (standard
# tier, "Fine-tuning" and "Models" tables). Azure OpenAI lists the same Global token prices
# (https://azure.microsoft.com/pricing/details/cognitive-services/openai-service/); its
# hourly hosting fee for a fine-tuned deployment is NOT included in a compare cost.
# Local models run on your hardware and have no price. Used by ``cloudtune compare``
# (through each model's ``inference_prices`` in the provider's facts).
INFERENCE_PRICE_DATE = "2025-06-01"
INFERENCE_PRICE_SOURCE = "https://openai.com/api/pricing/ (standard tier, per 1M tokens; Azure hosting fee excluded)"
INFERENCE_PRICES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "gpt-4.1-2025-04-14": ((2.00, 8.00), (3.00, 12.00)),
    "gpt-4.1-mini-2025-04-14": ((0.40, 1.60), (0.80, 3.20)),
    "gpt-4.1-nano-2025-04-14": ((0.10, 0.40), (0.20, 0.80)),
    "gpt-4o-2024-08-06": ((2.50, 10.00), (3.75, 15.00)),
    "gpt-4o-mini-2024-07-18": ((0.15, 0.60), (0.30, 1.20)),
    "gpt-3.5-turbo-0125": ((0.50, 1.50), (3.00, 6.00)),
}


# (name, aliases, training context tokens, tiktoken encoding, USD per 1M training tokens, methods, notes)
FINE_TUNABLE: list[tuple[str, list[str], int, str, float, tuple[str, ...], str]] = [
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
