"""The one place ``openai`` SDK exceptions become cloudtune errors."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from cloudtune import errors, secrets

NAME = "openai"
_KEYISH = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{3,}|[A-Za-z0-9_\-]{2,}\*{3,}[A-Za-z0-9_\-]*)")
CREDENTIALS_HINT = (
    "Check OPENAI_API_KEY (and OPENAI_ORG_ID / OPENAI_PROJECT_ID or the provider options organization/project "
    "if you set them): the key must belong to a project that may use fine-tuning; OPENAI_BASE_URL must point "
    "at the API you mean."
)
QUOTA_HINT = "Your OpenAI organization has run out of quota or credit: check billing and usage limits."
_CAPABILITY_CODES = {"model_not_available", "unsupported_model", "model_not_found_for_fine_tuning"}
_DATASET_PARAMS = {"training_file", "validation_file", "file"}


def scrub(text: str) -> str:
    """Remove anything that looks like a credential (:func:`cloudtune.secrets.scrub`), and the masked
    keys the service echoes ("sk-abc***xyz")."""
    return _KEYISH.sub("sk-***", secrets.scrub(text))


def retry_after_seconds(headers: Any) -> float | None:
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(0.0, parsed.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner.get("message"), str):
            return inner["message"]
    return str(getattr(exc, "message", None) or exc)


def translate_error(exc: BaseException) -> errors.CloudtuneError:
    try:
        import openai
    except ImportError:  # pragma: no cover - the provider cannot run without it
        return errors.ProviderUnavailable("The openai SDK is not installed.", hint="pip install 'cloudtune[openai]'")

    if isinstance(exc, ImportError):
        return errors.ProviderUnavailable(f"openai: {exc}", hint="pip install 'cloudtune[openai]'")
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "failed"
        return errors.TransientError(f"The connection to OpenAI {kind}: {scrub(str(exc))}", provider=NAME)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = getattr(exc, "code", None)
        param = getattr(exc, "param", None)
        message = scrub(_message(exc))
        common: dict[str, Any] = {"provider": NAME, "status_code": status, "code": code, "request_id": exc.request_id}
        headers = getattr(exc.response, "headers", None)
        if status == 401:
            return errors.AuthError(f"OpenAI refused the credentials (401): {message}", hint=CREDENTIALS_HINT, **common)
        if status == 403 and code == "training_not_available":
            # the fine-tuning wind-down (https://platform.openai.com/docs/deprecations): not a credential problem
            from providers.openai.capabilities import wind_down_status

            return errors.CapabilityError(f"OpenAI does not accept fine-tuning jobs from this organization (403 "
                                          f"training_not_available): {message}", hint=wind_down_status(), **common)
        if status == 403:
            return errors.AuthError(f"OpenAI refused the request (403): {message}", hint=CREDENTIALS_HINT, **common)
        if status == 404:
            return errors.NotFound(f"OpenAI: not found: {message}", **common)
        if status == 409:
            return errors.Conflict(f"OpenAI: conflict: {message}", **common)
        if status == 429:
            if code == "insufficient_quota":
                return errors.QuotaExceeded(f"OpenAI: {message}", hint=QUOTA_HINT, **common)
            return errors.RateLimited(f"OpenAI rate limit: {message}", retry_after=retry_after_seconds(headers),
                                      hint="cloudtune waits and retries; lower your request rate if it persists.",
                                      **common)
        if status >= 500:
            return errors.TransientError(f"OpenAI server error ({status}): {message}",
                                         retry_after=retry_after_seconds(headers), **common)
        if status in (400, 413, 422):
            if code in _CAPABILITY_CODES:
                return errors.CapabilityError(f"OpenAI: {message}",
                                              hint="See `cloudtune providers` for the models OpenAI fine-tunes.", **common)
            if param in _DATASET_PARAMS:
                return errors.DatasetError(f"OpenAI refused the file: {message}", **common)
            return errors.InvalidInput(f"OpenAI refused the request ({status}): {message}", **common)
        return errors.ProviderError(f"OpenAI error ({status}): {message}", **common)
    if isinstance(exc, openai.OpenAIError):
        text = scrub(str(exc))
        if "api_key" in text or "API key" in text:
            return errors.AuthError("No OpenAI API key was found.", hint=CREDENTIALS_HINT, provider=NAME)
        return errors.ProviderError(f"OpenAI: {text}", provider=NAME)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return errors.TransientError(f"OpenAI connection problem: {exc}", provider=NAME)
    if isinstance(exc, FileNotFoundError):
        return errors.InvalidInput(f"File not found: {exc.filename}", provider=NAME)
    return errors.ProviderError(f"OpenAI: {type(exc).__name__}: {scrub(str(exc))}", provider=NAME)
