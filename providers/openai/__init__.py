"""The OpenAI provider (``--provider openai``). Imported only through the registry."""

from providers.openai.provider import OpenAIProvider

__all__ = ["OpenAIProvider"]
