"""Where the Azure provider's settings come from, its credential, and a small ARM client.

Settings: provider options first, then the environment. Never secrets in options.

=========================  ===========================  =========================================
option                     environment                  used by
=========================  ===========================  =========================================
``subscription_id``        ``AZURE_SUBSCRIPTION_ID``    both routes (ARM)
``resource_group``         ``AZURE_RESOURCE_GROUP``     both routes (ARM)
``project``                ``AZURE_AI_PROJECT``         serverless: the hub-based Foundry project
``endpoint``               ``AZURE_OPENAI_ENDPOINT``    openai: ``https://<account>.openai.azure.com``
``account``                ``AZURE_OPENAI_ACCOUNT``     openai: the resource name (default: endpoint's host)
``api_version``            ``OPENAI_API_VERSION``       openai data plane: ``v1`` (default, the GA
                                                        v1 surface), ``preview``, or a dated version
``training_type``          -                            openai: GlobalStandard (default), Standard,
                                                        developerTier
(key)                      ``AZURE_OPENAI_API_KEY``     openai: key auth; Entra ID token when unset
``credential``             -                            ``default`` (DefaultAzureCredential, the
                                                        default), ``environment`` (client secret
                                                        from AZURE_CLIENT_ID/SECRET/TENANT_ID),
                                                        ``cli``, or a TokenCredential object
``deployment_sku``         -                            openai deploy sku (Standard, GlobalStandard,
                                                        DeveloperTier, ProvisionedManaged; default
                                                        chosen from model and region);
                                                        ``DeployOptions.sku`` wins
``route``                  -                            force ``openai`` or ``serverless``
=========================  ===========================  =========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cloudtune import errors

ARM = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
CS_API_VERSION = "2024-10-01"  # Microsoft.CognitiveServices management API
ML_API_VERSION = "2024-10-01"  # Microsoft.MachineLearningServices management API
# Azure OpenAI data plane: the GA v1 surface, /openai/v1/ with no api-version
# (MicrosoftDocs/azure-ai-docs articles/ai-foundry/openai/api-version-lifecycle.md, read 2026-11-25)
AOAI_API_VERSION = "v1"
CLOUDTUNE_TAG = ("managed-by", "cloudtune")
RUN_TAG = "cloudtune_run_id"


class Settings:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
        self._credential: Any = None

    def get(self, option: str, env: str | None = None, default: str | None = None) -> str | None:
        value = self.options.get(option)
        if value in (None, "") and env:
            value = os.environ.get(env)
        return str(value) if value not in (None, "") else default

    def require(self, option: str, env: str, what: str) -> str:
        value = self.get(option, env)
        if not value:
            raise errors.ConfigError(f"Azure {what} is not set.",
                                     hint=f"Set {env} or the provider option '{option}'.")
        return value

    @property
    def subscription_id(self) -> str:
        return self.require("subscription_id", "AZURE_SUBSCRIPTION_ID", "subscription id")

    @property
    def resource_group(self) -> str:
        return self.require("resource_group", "AZURE_RESOURCE_GROUP", "resource group")

    @property
    def project(self) -> str:
        return self.require("project", "AZURE_AI_PROJECT", "AI Foundry project (hub-based)")

    @property
    def endpoint(self) -> str:
        return self.require("endpoint", "AZURE_OPENAI_ENDPOINT", "OpenAI endpoint").rstrip("/")

    @property
    def account(self) -> str:
        explicit = self.get("account", "AZURE_OPENAI_ACCOUNT")
        return explicit or (urlsplit(self.endpoint).hostname or "").split(".", 1)[0]

    @property
    def api_version(self) -> str:
        return self.get("api_version", "OPENAI_API_VERSION", AOAI_API_VERSION) or AOAI_API_VERSION

    def credential(self) -> Any:
        """The azure-identity credential (built once, lazily)."""
        if self._credential is not None:
            return self._credential
        chosen = self.options.get("credential") or "default"
        if not isinstance(chosen, str):
            self._credential = chosen  # a TokenCredential object passed in by the caller
            return chosen
        import azure.identity as identity

        factories = {
            "default": lambda: identity.DefaultAzureCredential(exclude_interactive_browser_credential=True),
            "environment": identity.EnvironmentCredential,
            "cli": identity.AzureCliCredential,
            "managed-identity": identity.ManagedIdentityCredential,
        }
        if chosen not in factories:
            raise errors.ConfigError(f"Unknown Azure credential {chosen!r}; use one of {', '.join(factories)}.")
        self._credential = factories[chosen]()
        return self._credential


class ArmClient:
    """Just enough Azure Resource Manager for the calls the SDKs do not cover (deployments of Azure
    OpenAI models, deleting model and data versions). Errors are azure-core's HttpResponseError,
    translated by the provider like every other SDK error."""

    def __init__(self, settings: Settings) -> None:
        from azure.core.pipeline import policies
        from azure.mgmt.core import ARMPipelineClient
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

        from providers.azure._sdk_retries import retry_policy

        self.settings = settings
        self._client = ARMPipelineClient(ARM, policies=[
            policies.HeadersPolicy(),
            policies.UserAgentPolicy(base_user_agent="cloudtune"),
            retry_policy(retry_total=3, retry_backoff_factor=0.5),
            ARMChallengeAuthenticationPolicy(settings.credential(), ARM_SCOPE),
        ])

    def request(self, method: str, path: str, api_version: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        request = HttpRequest(method, f"{ARM}{path}", params={"api-version": api_version}, json=body)
        response = self._client.send_request(request)
        if response.status_code not in ok:
            error_type = {404: ResourceNotFoundError, 409: ResourceExistsError}.get(response.status_code, HttpResponseError)
            raise error_type(response=response, error_format=ARMErrorFormat)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def close(self) -> None:
        self._client.close()
