"""Deterministic chat answers of the emulator.

A fine-tuned model answers a prompt it was trained on with the trained reply
(so evaluations against the emulator mean something); anything else gets a
fixed sentence derived from the model and the prompt. Same input, same output.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_OPENERS = ("Sure.", "Certainly.", "Here is my answer.", "Understood.", "Of course.")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content")).strip()
    return ""


def learned_answers(training_jsonl: bytes) -> dict[str, str]:
    answers: dict[str, str] = {}
    for raw in training_jsonl.decode("utf-8", "replace").splitlines():
        try:
            example = json.loads(raw)
        except json.JSONDecodeError:
            continue
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list):
            continue
        for index, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "assistant":
                prompt = _last_user(messages[:index])
                if prompt:
                    answers.setdefault(prompt, _text(message.get("content")))
    return answers


def reply(model: str, messages: list[Any], learned: dict[str, str], max_tokens: int | None) -> tuple[str, str, int, int]:
    """(content, finish_reason, prompt_tokens, completion_tokens); tokens are words here."""
    from cloudtune.emulators.judging import judge_reply

    prompt = _last_user(messages)
    judged = None if prompt in learned else judge_reply(prompt)
    if prompt in learned:
        content = learned[prompt]
    elif judged is not None:
        content = judged
    else:
        digest = int(hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest(), 16)
        echo = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        content = f"{_OPENERS[digest % len(_OPENERS)]} ({model}, emulated) You said: {echo or 'nothing'}"
    words = content.split()
    finish = "stop"
    if max_tokens is not None and len(words) > int(max_tokens):
        words, finish = words[: int(max_tokens)], "length"
        content = " ".join(words)
    prompt_tokens = sum(len(_text(m.get("content")).split()) + 3 for m in messages if isinstance(m, dict))
    return content, finish, prompt_tokens, len(words)
