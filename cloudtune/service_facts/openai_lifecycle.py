"""OpenAI's fine-tuning wind-down and model shutdowns, as data. Read by the OpenAI provider
(refuse shut-down bases, say when a fine-tune stops serving, explain a 403 ``training_not_available``)
and by the OpenAI emulator (which refuses the same), so both move together.

Source: https://platform.openai.com/docs/deprecations (read 2026-11-25):

* 2026-10-23: gpt-4.1-nano, o4-mini and gpt-3.5-turbo snapshots shut down, and every fine-tune of them;
* 2027-01-14: gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini snapshots shut down, **and every fine-tune
  built on them**;
* self-serve fine-tuning job creation ends for everyone on 2027-01-06 (earlier for organizations
  without recent fine-tuning: 2026-05-07 for those that never fine-tuned, 2026-07-02 for those with
  no fine-tuned inference in 60 days).

The live answer wins where there is one: ``GET /v1/models/{id}`` carries ``shutdown_date`` and the
provider reads it; this table is the offline fallback. ``CLOUDTUNE_TODAY`` (an ISO date) pins
"today" for reproducible runs and tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

SOURCE = "https://platform.openai.com/docs/deprecations (read 2026-11-25)"
JOB_CREATION_ENDS = date(2027, 1, 6)


@dataclass(frozen=True)
class Shutdown:
    prefix: str  # lower-case base model prefix (snapshots and aliases alike)
    on: date


SHUTDOWNS: tuple[Shutdown, ...] = (
    Shutdown("gpt-4.1-nano", date(2026, 10, 23)),
    Shutdown("o4-mini", date(2026, 10, 23)),
    Shutdown("gpt-3.5-turbo", date(2026, 10, 23)),
    Shutdown("gpt-35-turbo", date(2026, 10, 23)),
    Shutdown("gpt-4o-mini", date(2027, 1, 14)),
    Shutdown("gpt-4o", date(2027, 1, 14)),
    Shutdown("gpt-4.1-mini", date(2027, 1, 14)),
    Shutdown("gpt-4.1", date(2027, 1, 14)),
)


def today() -> date:
    pinned = os.environ.get("CLOUDTUNE_TODAY")
    return date.fromisoformat(pinned) if pinned else datetime.now(timezone.utc).date()


def base_of(model: str) -> str:
    """'ft:gpt-4o-mini-2024-07-18:org::abc' -> 'gpt-4o-mini-2024-07-18'."""
    return model[3:].split(":", 1)[0] if model.startswith("ft:") else model


def table_shutdown(model: str) -> date | None:
    name = base_of(model).lower()
    # longest prefix first: gpt-4.1-nano before gpt-4.1, gpt-4o-mini before gpt-4o
    for entry in sorted(SHUTDOWNS, key=lambda s: -len(s.prefix)):
        if name == entry.prefix or name.startswith(entry.prefix + "-"):
            return entry.on
    return None


def parse_shutdown(value: Any) -> date | None:
    """``shutdown_date`` as the models API may give it: unix seconds or an ISO date."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc).date()
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def azure_equivalent(model: str) -> str:
    """The same model family on Azure OpenAI (it keeps serving there): its dated id."""
    from cloudtune.service_facts.azure_openai import BASE_MODELS

    name = base_of(model).lower()
    for row in BASE_MODELS:
        if "supervised" not in row.methods or row.open_weight:
            continue  # o4-mini is RFT only on Azure: an OpenAI SFT spec moves to gpt-4.1-mini instead
        if name in (row.dated_id, row.short) or name.startswith(row.short + "-20"):
            return row.dated_id
    return "gpt-4.1-mini-2025-04-14"


LOCAL_ALTERNATIVE = "HuggingFaceTB/SmolLM2-360M-Instruct"
