"""Eval files and few-shot prompts.

An eval file is chat JSONL like the training data: every message before the last
assistant turn is the prompt, the last assistant turn is the reference. It goes
through the dataset validator first, so a broken line is reported by number (exit 2)
before any request is sent.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune import errors

FEW_SHOT_SEED = 1234  # fixed: the same K examples every time, for every provider


@dataclass
class EvalExample:
    prompt: list[dict[str, Any]]
    reference: str

    @property
    def question(self) -> str:
        users = [m for m in self.prompt if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        return content if isinstance(content, str) else json.dumps(content)


#: a name no provider answers to: the validator then applies cloudtune's default data rules
EVAL_RULES = "eval file"


def validate_eval_file(path: Path) -> None:
    """Raise DatasetError (exit 2) listing the validator's errors by line. Eval files are
    never uploaded, so cloudtune's default data rules apply (no minimum count, BOM allowed), not
    any one provider's."""
    from cloudtune.dataset import validate_file

    if not Path(path).is_file():
        raise errors.DatasetError(f"Eval file {path} does not exist.")
    report = validate_file(path, provider=EVAL_RULES, workers=1)
    problems = [p for p in report.errors if p.code != "too_few_examples"]
    if problems:
        listed = "\n".join(f"  {path}:{p.line}: {p.message} [{p.code}]" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise errors.DatasetError(f"Eval file {path} is not usable:\n{listed}{more}",
                                  hint=f"`cloudtune validate {path} --provider local` shows every problem.")


def _examples(path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.DatasetError(f"Cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((number, list(json.loads(line)["messages"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.DatasetError(f"{path}:{number}: not a chat example ({exc}).") from exc
    return rows


def load_eval_file(path: Path, limit: int | None = None, *, validate: bool = True) -> list[EvalExample]:
    if validate:
        validate_eval_file(path)
    examples: list[EvalExample] = []
    for number, messages in _examples(path):
        assistant = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"]
        if not assistant:
            raise errors.DatasetError(f"{path}:{number}: an eval example needs an assistant turn as its reference.")
        last = assistant[-1]
        examples.append(EvalExample(prompt=messages[:last], reference=str(messages[last].get("content") or "")))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise errors.DatasetError(f"Eval file {path} has no examples.")
    return examples


def few_shot_messages(training_file: Path, k: int, *, seed: int = FEW_SHOT_SEED,
                      line_numbers: list[int] | None = None) -> list[dict[str, Any]]:
    """K training examples (drawn with a fixed seed) as user/assistant turns to put before
    each eval prompt. System messages are left out: the eval prompt brings its own. The
    training file's line numbers of the examples drawn are appended to ``line_numbers``."""
    numbered = _examples(training_file)
    rows = [messages for _, messages in numbered]
    if k > len(rows):
        raise errors.InvalidInput(f"--few-shot {k} asks for more examples than {training_file} has ({len(rows)}).")
    # random.sample's choice depends only on the population size and k: drawing indices picks
    # the same examples as drawing the rows themselves did before line numbers were recorded
    chosen = random.Random(seed).sample(range(len(rows)), k)
    if line_numbers is not None:
        line_numbers.extend(numbered[i][0] for i in chosen)
    shots: list[dict[str, Any]] = []
    for messages in (rows[i] for i in chosen):
        shots.extend({"role": m["role"], "content": m.get("content")} for m in messages
                     if isinstance(m, dict) and m.get("role") in ("user", "assistant"))
    return shots


def with_prefix(prompt: list[dict[str, Any]], prefix: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt with ``prefix`` turns inserted after its leading system messages."""
    if not prefix:
        return prompt
    head = 0
    while head < len(prompt) and prompt[head].get("role") in ("system", "developer"):
        head += 1
    return [*prompt[:head], *prefix, *prompt[head:]]
