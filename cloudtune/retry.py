"""Retrying transient provider errors (tenacity), honouring ``Retry-After``.

Used by providers around idempotent calls. Creating a job is never retried
blindly: see :mod:`cloudtune.pipeline` (look for the run id first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cloudtune import errors, timescale

T = TypeVar("T")

DEFAULT_ATTEMPTS = 6
MAX_BACKOFF_S = 60.0


def _wait_seconds(retry_state) -> float:  # type: ignore[no-untyped-def]
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), MAX_BACKOFF_S)
    # exponential: 0.5, 1, 2, 4... capped
    return min(0.5 * 2 ** (retry_state.attempt_number - 1), MAX_BACKOFF_S)


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = timescale.sleep,
    translate: Callable[[BaseException], BaseException] | None = None,
) -> T:
    """Call ``fn``; retry on :class:`~cloudtune.errors.TransientError` (after ``translate``
    maps SDK errors to ours), waiting ``Retry-After`` when given, exponential otherwise."""
    import tenacity

    def attempt() -> T:
        try:
            return fn()
        except errors.CloudtuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, re-raised
            if translate is None:
                raise
            raise translate(exc) from exc

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=_wait_seconds,
        retry=tenacity.retry_if_exception_type(errors.TransientError),
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt)
