"""The local provider's view of its deployments: a deployment record and its server's state
as a ``Deployment``, chat calls to the server, and the server's HTTP errors as cloudtune errors."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from cloudtune import errors
from cloudtune.types import ChatResult, Deployment, DeploymentState
from local_backend.deployments import DeploymentDir


def deployment_view(deployment: DeploymentDir) -> Deployment:
    status = deployment.status()
    details: dict[str, Any] = {"pid": status.pid, "port": status.port, **status.details}
    # How to call it, without reading cloudtune's files: the base URL for the openai client
    # and a command that prints the bearer key (the key itself is never in any output).
    details["key_command"] = f"cat {deployment.path / 'key'}"
    if status.endpoint_url:
        details["base_url"] = status.endpoint_url
    if status.error:
        details["error"] = status.error
    return Deployment(
        name=status.name,
        model=status.model,
        state=DeploymentState(status.state),
        endpoint_url=status.endpoint_url,
        provider_status=status.state,
        managed_by_cloudtune=True,
        details=details,
        run_id=status.run_id,
    )


def chat_completion(info: Deployment, key: str, messages: Sequence[Mapping[str, Any]], params: dict[str, Any], timeout: float) -> ChatResult:
    if info.state != DeploymentState.READY:
        raise errors.TransientError(
            f"local deployment {info.name} is {info.state}" + (f": {info.details['error']}" if "error" in info.details else ""),
            provider="local",
        )
    body = {"model": info.name, "messages": [dict(m) for m in messages], **params}
    request = urllib.request.Request(
        f"{info.endpoint_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    choice = payload["choices"][0]
    usage = payload.get("usage") or {}
    return ChatResult(
        content=choice["message"].get("content") or "",
        model=payload.get("model"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        latency_s=time.perf_counter() - started,
    )


def http_error(exc: urllib.error.HTTPError) -> errors.CloudtuneError:
    try:
        message = json.loads(exc.read()).get("error", {}).get("message") or str(exc)
    except (ValueError, AttributeError):
        message = str(exc)
    status = exc.code
    kind: type[errors.CloudtuneError] = errors.ProviderError
    if status == 401 or status == 403:
        kind = errors.AuthError
    elif status == 404:
        kind = errors.NotFound
    elif status == 409:
        kind = errors.Conflict
    elif status == 400:
        kind = errors.InvalidInput
    elif status == 429 or status >= 500:
        kind = errors.TransientError
    return kind(f"local chat server: {message}", provider="local", status_code=status)
