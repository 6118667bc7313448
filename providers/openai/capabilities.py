"""What OpenAI's fine-tuning service can do, as data (dated, with sources).

Model names, methods and training context come from the provider's facts
(:mod:`providers.openai.facts`, rows in :mod:`cloudtune.service_facts.openai_models`); this module adds the OpenAI-specific facts: the
limits of its upload routes and the published wind-down of self-serve
fine-tuning job creation. ``OpenAIProvider.check()`` and ``cloudtune providers``
show it; a permission error on job creation points at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

AS_OF = "2026-11-21"
DEPRECATIONS_SOURCE = "https://platform.openai.com/docs/deprecations (fine-tuning wind-down, posted 2026-05-07)"
FINE_TUNING_GUIDE = "https://platform.openai.com/docs/guides/fine-tuning"
UPLOADS_SOURCE = "https://platform.openai.com/docs/api-reference/uploads"

MB = 1024 * 1024
GB = 1024 * MB
FILES_API_MAX_BYTES = 512 * MB  # files.create
UPLOADS_API_MAX_BYTES = 8 * GB  # Uploads API, parts of at most 64 MB
UPLOAD_PART_BYTES = 64 * MB


@dataclass(frozen=True)
class WindDownPhase:
    starts: date
    who: str  # whose job creation stops from this date


# OpenAI's published wind-down of self-serve fine-tuning *job creation*. Inference on existing
# fine-tuned models continues until their base models are deprecated.
WIND_DOWN: tuple[WindDownPhase, ...] = (
    WindDownPhase(date(2026, 5, 7), "organizations that have never created a fine-tuning job"),
    WindDownPhase(date(2026, 7, 2), "organizations that have not run inference on a fine-tuned model in the last 60 days"),
    WindDownPhase(date(2027, 1, 6), "all organizations"),
)


def wind_down_status(today: date | None = None) -> str:
    """One sentence on where the wind-down stands today."""
    today = today or date.today()
    started = [phase for phase in WIND_DOWN if phase.starts <= today]
    upcoming = [phase for phase in WIND_DOWN if phase.starts > today]
    parts = []
    if started:
        parts.append("OpenAI's self-serve fine-tuning job creation has stopped for "
                     + "; ".join(f"{p.who} (since {p.starts})" for p in started))
    if upcoming:
        lead = "It stops for " if started else "OpenAI's self-serve fine-tuning job creation stops for "
        parts.append(lead + "; ".join(f"{p.who} from {p.starts}" for p in upcoming))
    return ". ".join(parts) + (". Existing fine-tuned models keep serving until their base models retire. "
                               f"Source: {DEPRECATIONS_SOURCE}.")


def creation_blocked_for_everyone(today: date | None = None) -> bool:
    return (today or date.today()) >= WIND_DOWN[-1].starts


def fine_tunable_models() -> list[dict[str, Any]]:
    """Rows of the capability table: model, aliases, methods, training context, price (dated)."""
    from providers.openai.facts import MODELS

    rows = []
    for info in MODELS:
        rows.append({
            "model": info.name,
            "aliases": list(info.aliases),
            "methods": list(info.methods),
            "training_context_tokens": info.context_tokens,
            "context_source": info.context_source,
            "price_per_1m_training_tokens": info.price_per_1m_training_tokens,
            "price_date": info.price_date,
            "price_source": info.price_source,
            "notes": info.notes,
        })
    return rows


def summary_rows() -> list[str]:
    """One line per fine-tunable model, for ``cloudtune providers``."""
    return [
        f"{row['model']}: {', '.join(row['methods'])}; examples up to {row['training_context_tokens']:,} tokens"
        for row in fine_tunable_models()
    ]


def model_info(model: str | None):  # type: ignore[no-untyped-def]
    from cloudtune.provider_facts import find_model
    from providers.openai.facts import MODELS

    return find_model(MODELS, model)


def capability_table(today: date | None = None) -> dict[str, Any]:
    """Everything ``cloudtune providers`` shows for OpenAI, as JSON-ready data."""
    return {
        "as_of": AS_OF,
        "models": fine_tunable_models(),
        "uploads": {
            "files_api_max_bytes": FILES_API_MAX_BYTES,
            "uploads_api_max_bytes": UPLOADS_API_MAX_BYTES,
            "part_bytes": UPLOAD_PART_BYTES,
            "source": UPLOADS_SOURCE,
        },
        "deployment": "A fine-tuned model is served as soon as its job succeeds; there is nothing to deploy or undeploy.",
        "wind_down": [{"from": str(p.starts), "job_creation_stops_for": p.who} for p in WIND_DOWN],
        "wind_down_status": wind_down_status(today),
        "sources": [FINE_TUNING_GUIDE, DEPRECATIONS_SOURCE, UPLOADS_SOURCE],
    }
