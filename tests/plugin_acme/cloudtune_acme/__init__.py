"""``--provider acme``: an in-memory fine-tuning service, shipped as a plugin.

It declares everything the core needs through the provider interface only: its data rules (at
least 2 examples, no byte-order mark, special tokens refused), a priced model table (so
``--max-cost`` can be checked), its request concurrency, its options as a pydantic model, the
operations it cannot do, ``plan()`` and ``hosting_note()``. The service itself is the core tests'
file-backed memory service (state in ``ACME_STATE`` or ``$CLOUDTUNE_HOME/acme-service.json``), so
separate ``cloudtune`` processes see the same jobs, models and deployments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cloudtune import errors
from cloudtune.catalog import SPECIAL_TOKENS, ModelInfo, ProviderDataRules
from cloudtune.provider_facts import Operation, ProviderFacts, ProviderOptions
from cloudtune.types import FineTuneSpec
from tests.support.memory_provider import MemoryProvider

PRICE_SOURCE = "acme price list (a test fixture, not a real service)"

MODELS = (
    ModelInfo(provider="acme", name="acme-small-2026-01", aliases=("acme-small",), context_tokens=4096,
              methods=("supervised",), price_per_1m_training_tokens=2.0, price_date="2026-11-01",
              price_source=PRICE_SOURCE, context_source=PRICE_SOURCE),
    ModelInfo(provider="acme", name="acme-large-2026-01", aliases=("acme-large",), context_tokens=8192,
              methods=("supervised", "dpo"), price_per_1m_training_tokens=40.0, price_date="2026-11-01",
              price_source=PRICE_SOURCE, context_source=PRICE_SOURCE),
)

RULES = ProviderDataRules(min_examples=2, max_file_bytes=1024 * 1024, max_upload_bytes=1024 * 1024, bom="refused",
                          special_tokens_are_errors=True, multimodal=False, special_tokens=SPECIAL_TOKENS,
                          hosted=True, notes="acme: 1 MB per file, UTF-8 without a byte-order mark.")


class AcmeOptions(ProviderOptions):
    region: Literal["eu-1", "us-1"] | None = Field(None, description="eu-1 | us-1 (default eu-1)")
    steps: int | None = Field(None, description="training steps a job reports (default 3)")


class AcmeProvider(MemoryProvider):
    name = "acme"
    Options = AcmeOptions
    facts = ProviderFacts(data_rules=RULES, models=MODELS, request_concurrency=2)
    unsupported = {Operation.PAUSE_JOB: "acme jobs run to the end once started",
                   Operation.RESUME_JOB: "acme jobs run to the end once started"}

    def __init__(self, options: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        home = Path(os.environ.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune")
        self.state_file = Path(os.environ.get("ACME_STATE") or home / "acme-service.json")

    def plan(self, spec: FineTuneSpec) -> list[str]:
        info = self.facts.lookup_model(spec.base_model)
        if info is None:
            raise errors.CapabilityError(f"acme does not fine-tune {spec.base_model}. Nothing was uploaded.",
                                         hint="Use acme-small or acme-large.", provider=self.name)
        return [f"acme trains {info.name} in {self.options.get('region') or 'eu-1'}"]

    def hosting_note(self, spec: FineTuneSpec) -> str | None:
        return "acme serves fine-tuned models per token, no hourly fee"


__all__ = ["AcmeOptions", "AcmeProvider"]
