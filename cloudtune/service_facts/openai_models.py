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
