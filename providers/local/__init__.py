"""The local provider: LoRA/QLoRA on this machine (see :mod:`local_backend`)."""

from providers.local._provider import LocalProvider

__all__ = ["LocalProvider"]
