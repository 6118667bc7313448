"""cloudtune: fine-tune chat models on OpenAI, Azure AI Foundry or a local QLoRA backend
behind one interface.

The public names are re-exported lazily, so ``import cloudtune`` (and the CLI's
start) pays for pydantic and friends only when they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # types
    **{name: "cloudtune.types" for name in (
        "FineTuneSpec", "Hyperparameters", "DeployOptions", "CleanupPolicy", "Method", "Job", "JobState",
        "JobEvent", "JobError", "Checkpoint", "Deployment", "DeploymentState", "ChatResult", "CheckResult",
        "Run", "Step", "can_transition", "JOB_TRANSITIONS",
    )},
    # errors
    **{name: "cloudtune.errors" for name in (
        "CloudtuneError", "InvalidInput", "ConfigError", "DatasetError", "AuthError", "CapabilityError",
        "QuotaExceeded", "RegionUnavailable", "UnsupportedOperation", "ProviderError", "NotFound", "Conflict",
        "TransientError", "RateLimited", "JobFailed", "WaitTimeout", "ProviderUnavailable", "Interrupted",
        "exit_code_for",
    )},
    "Provider": "cloudtune.provider",
    "get_provider": "cloudtune.registry",
    "known_providers": "cloudtune.registry",
    "wait_for_job": "cloudtune.poller",
    "wait_for_deployment": "cloudtune.poller",
    "follow_events": "cloudtune.poller",
    "PollPolicy": "cloudtune.poller",
    "Ledger": "cloudtune.ledger",
    "StateStore": "cloudtune.state",
    "open_state": "cloudtune.state",
    "Pipeline": "cloudtune.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudtune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
