"""One time scale for every wait cloudtune makes: poll intervals, retry back-offs, the SDKs'
own retry back-offs (configured through our clients) and the emulators' injected latencies.

``CLOUDTUNE_TIME_SCALE`` (a positive number, default 1) multiplies each of those sleeps:
``0.01`` turns a 2 s back-off into 20 ms, so a dry run against an emulator, or the test suite,
goes through the same retries in a fraction of the time. Deadlines (``--timeout``, the
poller's wait limit, lock waits) stay in real seconds: a user's limit means what it says.

Imports nothing but the standard library (``cloudtune --help`` stays light).
"""

from __future__ import annotations

import math
import os
import time

from cloudtune import interrupts

ENV = "CLOUDTUNE_TIME_SCALE"


def time_scale() -> float:
    """The factor every sleep is multiplied by (read each time: a test may set it late)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        from cloudtune.errors import ConfigError

        raise ConfigError(f"{ENV}={raw!r} is not a positive number.",
                          hint=f"Unset {ENV}, or give a factor such as 0.01 (every wait 100 times shorter).")
    return value


def scaled(seconds: float) -> float:
    """``seconds`` on the current time scale."""
    return max(0.0, seconds) * time_scale()


def sleep(seconds: float) -> None:
    """``time.sleep`` on the time scale: the default sleep of providers, retries and waits. An
    interruption a finalizer swallowed (``interrupts``) is raised here, before the wait."""
    interrupts.raise_if_lost()
    delay = scaled(seconds)
    if delay > 0:
        time.sleep(delay)
