"""Training-file checks the emulated service runs while a job is ``validating_files``.

They mirror what the real service refuses (one example per line, chat or
preference format, an assistant reply to learn, at least ``min_examples``
examples) and report the first problem with its line number, the way the
service's ``error.message`` does, so a dry run catches what a real run would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True)
class FileProblem:
    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class FileSummary:
    examples: list[dict]
    tokens: int  # rough billable tokens for one epoch (about 4 characters a token)
    problem: FileProblem | None = None


def _message_problem(message: object, index: int) -> str | None:
    if not isinstance(message, dict):
        return f"message {index}: is not an object"
    role = message.get("role")
    if role not in ROLES:
        return f"message {index}: invalid role {role!r}"
    content = message.get("content")
    if content is None and not message.get("tool_calls") and not message.get("function_call"):
        return f"message {index}: missing required key 'content'"
    if content is not None and not isinstance(content, (str, list)):
        return f"message {index}: 'content' must be a string or a list of content parts"
    return None


def _chat_problem(example: dict) -> str | None:
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing required key 'messages' (a non-empty list)"
    for index, message in enumerate(messages, start=1):
        problem = _message_problem(message, index)
        if problem:
            return problem
    if not any(m.get("role") == "assistant" for m in messages):
        return "no assistant message to learn from"
    return None


def _preference_problem(example: dict) -> str | None:
    source = example.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list) or not source["messages"]:
        return "missing required key 'input.messages' (a non-empty list)"
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if not isinstance(output, list) or not output:
            return f"missing required key '{key}' (a list with one assistant message)"
        if any(not isinstance(m, dict) or m.get("role") != "assistant" for m in output):
            return f"'{key}' must contain assistant messages only"
    return None


def check_training_file(content: bytes, *, method: str = "supervised", min_examples: int = 10) -> FileSummary:
    """Parse and check a JSONL training file; the first problem found is reported."""
    if content.startswith(b"\xef\xbb\xbf"):
        return FileSummary([], 0, FileProblem("invalid_training_file", _invalid(1, "a byte-order mark precedes the JSON"), 1))
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return FileSummary([], 0, FileProblem("invalid_training_file", _invalid(line, "not valid UTF-8"), line))
    examples: list[dict] = []
    characters = 0
    check = _preference_problem if method == "dpo" else _chat_problem
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            example = json.loads(raw)
        except json.JSONDecodeError:
            return FileSummary(examples, 0, FileProblem("invalid_training_file", _invalid(number, "not valid JSON"), number))
        if not isinstance(example, dict):
            return FileSummary(examples, 0, FileProblem("invalid_training_file", _invalid(number, "not a JSON object"), number))
        problem = check(example)
        if problem:
            return FileSummary(examples, 0, FileProblem("invalid_training_file", _invalid(number, problem), number))
        examples.append(example)
        characters += len(raw)
    if len(examples) < min_examples:
        message = (
            f"The job failed due to an invalid training file. Training file has {len(examples)} example(s), "
            f"but must have at least {min_examples} examples."
        )
        return FileSummary(examples, 0, FileProblem("invalid_n_examples", message))
    return FileSummary(examples, max(1, characters // 4))


def _invalid(line: int, detail: str) -> str:
    return f"The job failed due to an invalid training file. Invalid file format. Line {line}, {detail}."
