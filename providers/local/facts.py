"""What the local provider declares about itself (:class:`cloudtune.provider_facts.ProviderFacts`):
its data rules (no upload, no bill) and the small open models the QLoRA backend trains. The core
reaches these only through ``LocalProvider.facts``."""

from __future__ import annotations

from dataclasses import replace

from cloudtune.provider_facts import DEFAULT_DATA_RULES, ModelInfo, ProviderFacts

# cloudtune's defaults for data (any size, BOM kept, special tokens warned about), but nothing is
# hosted: no upload and no bill.
DATA_RULES = replace(
    DEFAULT_DATA_RULES,
    hosted=False,
    notes="Local QLoRA backend: no upload; special tokens are warned about, not refused.",
)


# Small open models the local QLoRA backend trains. Context from each model's
# config.json (max_position_embeddings); no price: it runs on your hardware.
_MODELS = [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", ["SmolLM2-135M-Instruct", "smollm2-135m"], 8_192),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", ["SmolLM2-360M-Instruct", "smollm2-360m"], 8_192),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", ["SmolLM2-1.7B-Instruct", "smollm2-1.7b"], 8_192),
    ("Qwen/Qwen2.5-0.5B-Instruct", ["Qwen2.5-0.5B-Instruct"], 32_768),
    ("Qwen/Qwen2.5-1.5B-Instruct", ["Qwen2.5-1.5B-Instruct"], 32_768),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", ["TinyLlama-1.1B-Chat-v1.0"], 2_048),
]


MODELS: tuple[ModelInfo, ...] = tuple(
    ModelInfo(provider="local", name=name, aliases=tuple(aliases), context_tokens=ctx, tokenizer=None,
              methods=("supervised", "dpo"),
              notes="Local QLoRA; token counts use the Hugging Face tokenizer when given a local path.",
              context_source="model config.json max_position_embeddings")
    for name, aliases, ctx in _MODELS)

# The built-in chat server answers the requests waiting together as one batch (up to
# local_backend.batching.DEFAULT_MAX_BATCH = 16; vLLM batches on its own): asking 16 at once is what
# lets it, and costs the server nothing when they come one by one.
FACTS = ProviderFacts(data_rules=DATA_RULES, models=MODELS, request_concurrency=16)

#: why ``--method reinforcement`` is refused here
NO_REINFORCEMENT = "the local backend has no reinforcement fine-tuning (no grader loop)"
