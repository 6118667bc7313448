"""The Azure SDKs' own retry waits on cloudtune's time scale (``CLOUDTUNE_TIME_SCALE``, see
:mod:`cloudtune.timescale`).

The Azure route keeps some SDK retries (azure-core's ``RetryPolicy`` in the ARM client and in
``MLClient``; the openai client's ``max_retries`` on reads). Their count, their Retry-After
handling and their back-off formula stay the SDKs'; only the wait between two attempts is
multiplied by the time scale, like every other wait cloudtune makes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cloudtune import timescale


def retry_policy(**settings: Any) -> Any:
    """azure-core's ``RetryPolicy(**settings)`` whose sleeps follow the time scale."""
    return _scaled_retry_policy_class()(**settings)


@cache
def _scaled_retry_policy_class() -> type:
    from azure.core.pipeline import policies

    class ScaledRetryPolicy(policies.RetryPolicy):
        # RetryPolicy.sleep: the server's Retry-After when it sent one, else the back-off.
        def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
            retry_after = self.get_retry_after(response) if response else None
            delay = retry_after if retry_after else self.get_backoff_time(settings)
            if delay and delay > 0:
                transport.sleep(timescale.scaled(delay))

    return ScaledRetryPolicy


def openai_client(client_class: type, **kwargs: Any) -> Any:
    """An openai SDK client (``OpenAI`` or ``AzureOpenAI``) whose retry waits follow the time scale."""
    return _scaled_openai_class(client_class)(**kwargs)


@cache
def _scaled_openai_class(client_class: type) -> type:
    class ScaledRetries(client_class):  # type: ignore[misc, valid-type]
        # the SDK's retry delay (Retry-After, else its jittered back-off), scaled; with_options
        # copies the client through its class, so per-call copies keep this
        def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
            return timescale.scaled(super()._calculate_retry_timeout(*args, **kwargs))

    ScaledRetries.__name__ = ScaledRetries.__qualname__ = client_class.__name__
    return ScaledRetries
