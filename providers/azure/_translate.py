"""The one place Azure SDK exceptions (``openai``, ``azure-core``, ``azure-identity``,
``azure-ai-ml``) become cloudtune errors."""

from __future__ import annotations

import re
from typing import Any

from cloudtune import errors, secrets

NAME = "azure"
CREDENTIALS_HINT = ("Check the Azure credential: AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID (or `az login`), "
                    "its role on the resource (Cognitive Services OpenAI Contributor, Azure AI Developer), and "
                    "AZURE_OPENAI_API_KEY if you use key auth.")
QUOTA_HINT = ("The Azure resource is out of quota: delete unused deployments (at most 5 fine-tuned deployments per "
              "resource), lower the capacity, or request more quota in the portal.")
_SECRETISH = re.compile(r"(?i)(api[-_]?key|bearer|sig|key)=?[:\s]*[A-Za-z0-9+/_\-.=]{16,}")


def scrub(text: str) -> str:
    """Every credential shape and environment secret (:func:`cloudtune.secrets.scrub`), then any
    long value following a key-like word (the SDKs' own message formats)."""
    return _SECRETISH.sub(r"\1=***", secrets.scrub(text))


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for name in ("retry-after-ms", "Retry-After", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / (1000.0 if name.endswith("ms") else 1.0)
        except ValueError:
            return None
    return None


def _by_status(status: int | None, error_code: str | None, message: str, retry_after: float | None, **common: Any) -> errors.CloudtuneError:
    lowered, code = message.lower(), error_code
    if code in ("InsufficientQuota", "QuotaExceeded") or "quota" in lowered and status in (400, 403, 409, 429):
        return errors.QuotaExceeded(f"Azure: {message}", hint=QUOTA_HINT, **common)
    if code == "RegionUnavailable" or "not available in region" in lowered:
        return errors.RegionUnavailable(f"Azure: {message}", **common)
    if code == "MarketplaceSubscriptionMissing":
        return errors.CapabilityError(f"Azure: {message}", hint="Subscribe to the model in the Foundry portal "
                                      "or set accept_marketplace_terms: true.", **common)
    if status in (401, 403):
        return errors.AuthError(f"Azure refused the request ({status}): {message}", hint=CREDENTIALS_HINT, **common)
    if status == 404:
        return errors.NotFound(f"Azure: not found: {message}", **common)
    if status == 409:
        return errors.Conflict(f"Azure: conflict: {message}", **common)
    if status == 429:
        return errors.RateLimited(f"Azure rate limit: {message}", retry_after=retry_after, **common)
    if status is not None and status >= 500:
        return errors.TransientError(f"Azure service error ({status}): {message}", retry_after=retry_after, **common)
    if status == 400:
        return errors.InvalidInput(f"Azure refused the request: {message}", **common)
    return errors.ProviderError(f"Azure: {message}", **common)


def translate_error(exc: BaseException) -> errors.CloudtuneError:
    if isinstance(exc, ImportError):
        return errors.ProviderUnavailable(f"azure: {exc}", hint="pip install 'cloudtune[azure]'")
    module = type(exc).__module__ or ""
    if module.startswith("openai"):
        return _from_openai(exc)
    if module.startswith("azure"):
        return _from_azure(exc)
    return errors.ProviderError(f"Azure: {type(exc).__name__}: {scrub(str(exc))}", provider=NAME)


def _from_openai(exc: BaseException) -> errors.CloudtuneError:
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return errors.TransientError(f"The connection to Azure OpenAI failed: {scrub(str(exc))}", provider=NAME)
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = scrub(str(inner.get("message") or exc.message))
        code = inner.get("code") if isinstance(inner.get("code"), str) else None
        headers = getattr(exc.response, "headers", None)
        return _by_status(exc.status_code, code, message, _retry_after(headers), provider=NAME,
                          status_code=exc.status_code, code=code, request_id=exc.request_id)
    return errors.ProviderError(f"Azure OpenAI: {scrub(str(exc))}", provider=NAME)


def _from_azure(exc: BaseException) -> errors.CloudtuneError:
    from azure.core import exceptions as core

    if isinstance(exc, core.ClientAuthenticationError):  # includes azure-identity's CredentialUnavailableError
        return errors.AuthError(f"Azure authentication failed: {scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
                                hint=CREDENTIALS_HINT, provider=NAME)
    if isinstance(exc, (core.ServiceRequestError, core.ServiceResponseError)):
        return errors.TransientError(f"The connection to Azure failed: {scrub(str(exc))}", provider=NAME)
    if isinstance(exc, core.HttpResponseError):
        response = getattr(exc, "response", None)
        status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        message = getattr(error, "message", None)
        if not code and response is not None:
            try:
                parsed = response.json().get("error") or {}
                code, message = parsed.get("code"), parsed.get("message")
            except Exception:  # noqa: BLE001 - a body that is not JSON
                pass
        message = scrub(str(message or exc.message or exc).splitlines()[0])
        headers = getattr(response, "headers", None)
        request_id = headers.get("x-ms-request-id") if headers else None
        return _by_status(status, code, message, _retry_after(headers), provider=NAME, status_code=status, code=code,
                          request_id=request_id)
    name = type(exc).__name__
    if name in ("ValidationException", "UserErrorException"):
        return errors.InvalidInput(f"Azure ML: {scrub(str(exc))}", provider=NAME)
    return errors.ProviderError(f"Azure: {name}: {scrub(str(exc))}", provider=NAME)
