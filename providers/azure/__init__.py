"""Azure AI Foundry provider (``--provider azure``): Azure OpenAI and serverless (Phi) routes."""

from providers.azure._provider import AzureProvider

__all__ = ["AzureProvider"]
