"""The environment every test process shares, the pytest process and the CLIs it starts.

cloudtune's service facts follow the calendar (cloudtune/service_facts/openai_lifecycle.py):
OpenAI takes no fine-tuning job after 2027-01-06 and shuts gpt-4o-mini down on 2027-01-14.
The tests describe the services as documented on the day those facts were read, so the
suite pins cloudtune's "today" to that day (``CLOUDTUNE_TODAY``) and a clone run next year
tests the same thing. Tests of the calendar itself set their own day.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DOCUMENTED_DAY = "2026-11-25"  # OpenAI's deprecations page and Azure's docs as read that day
_SHARED = frozenset({"CLOUDTUNE_TODAY"})


def pin_documented_day() -> None:
    os.environ["CLOUDTUNE_TODAY"] = DOCUMENTED_DAY


def env_without(*prefixes: str, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """``source`` (the environment) without the variables starting with ``prefixes`` (a user's
    own credentials and cloudtune settings), keeping the pinned day."""
    source = os.environ if source is None else source
    return {k: v for k, v in source.items() if k in _SHARED or not k.startswith(prefixes)}
