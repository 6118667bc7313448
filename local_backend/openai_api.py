"""The OpenAI chat-completions wire format, as far as the local server speaks it: which
request parameters it accepts, their checks, errors in OpenAI's shape, and the response
and stream-chunk bodies.

Shapes follow the OpenAI API reference for ``POST /v1/chat/completions`` (chat completion
object, chat completion chunk object, ``stream_options.include_usage``), read 2026-11-25.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# What the server honours. Anything else is refused by name, unless it is sent with the value
# that means "feature off" (many clients send e.g. presence_penalty=0 or logprobs=false always).
SUPPORTED = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n", "user"}
)
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "parallel_tool_calls": (False, True),
    "metadata": ({},),
    "store": (False,),
}


# Chat roles the server answers. ``developer`` is what OpenAI's newer models call the system
# message (API reference, "Chat Completions: messages", read 2026-12-04): the chat template knows it
# as ``system``. ``tool``/``function`` turns need tool calling, which this server does not offer.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RequestError(Exception):
    """An OpenAI-shaped client error: ``status`` and the ``error`` object."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f"'{name}' must be a number between {low} and {high}, got {value!r}", code="invalid_value", param=name)
    return float(value)


def _integer(body: dict, name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError(400, f"'{name}' must be an integer of at least {low}, got {value!r}", code="invalid_value", param=name)
    return value


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    for name, value in body.items():
        if name in SUPPORTED or value is None or value in _NEUTRAL.get(name, ()):
            continue
        raise RequestError(400, f"Unsupported parameter: '{name}' is not supported by the cloudtune local server.", code="unsupported_parameter", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required", code="missing_required_parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", code="invalid_value", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"messages[{index}] needs a 'role'", code="invalid_value", param=f"messages[{index}].role")
        if message["role"] not in ROLES:
            raise RequestError(400, f"messages[{index}].role {message['role']!r} is not supported; use one of "
                               f"{', '.join(sorted(ROLES))}", code="invalid_value", param=f"messages[{index}].role")
        if not isinstance(message.get("content") or "", str):
            raise RequestError(400, "only text content is supported", code="invalid_value", param=f"messages[{index}].content")
    if _integer(body, "n", 1) not in (None, 1):
        raise RequestError(400, "only n=1 is supported", code="unsupported_value", param="n")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise RequestError(400, "'stop' must be a string or a list of up to 4 strings", code="invalid_value", param="stop")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not body.get("stream")):
        raise RequestError(400, "'stream_options' is only allowed when 'stream' is true", code="invalid_value", param="stream_options")
    completion = _integer(body, "max_completion_tokens", 1)
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, f"'seed' must be an integer, got {seed!r}", code="invalid_value", param="seed")
    return ChatRequest(
        model=model,
        messages=[{"role": ROLES[m["role"]], "content": m.get("content") or ""} for m in messages],
        stream=bool(body.get("stream")),
        include_usage=bool((options or {}).get("include_usage")),
        max_tokens=completion if completion is not None else _integer(body, "max_tokens", 1),
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=stop,
        seed=seed,
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion_body(model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class ChunkWriter:
    """Builds the chunk objects of one streamed completion, all with the same id and created time."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = new_completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = None  # every chunk but the last carries usage: null when usage was asked for
        chunk.update(extra)
        return chunk

    def role(self) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}])

    def content(self, text: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}])

    def finish(self, reason: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {}, "finish_reason": reason, "logprobs": None}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return self._chunk([], usage=usage(prompt_tokens, completion_tokens))
