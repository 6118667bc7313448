"""Evaluation and comparison: ask deployments the held-out questions of an eval file
and score the answers against the reference assistant turns.

An eval file is chat JSONL like the training data: every message up to the last
assistant turn is the prompt, the last assistant turn is the reference. Scores
are plain and explainable: exact match (after normalising case, spaces and
punctuation at the ends) and token-level F1 (SQuAD style). Targets can sit on
different providers, so a hosted run and a local run are compared on the same
questions.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune import errors

if TYPE_CHECKING:
    from cloudtune.provider import Provider

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def token_f1(answer: str, reference: str) -> float:
    a, r = _WORD.findall(answer.lower()), _WORD.findall(reference.lower())
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


@dataclass
class EvalExample:
    prompt: list[dict[str, Any]]
    reference: str

    @property
    def question(self) -> str:
        users = [m for m in self.prompt if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        return content if isinstance(content, str) else json.dumps(content)


def load_eval_file(path: Path, limit: int | None = None) -> list[EvalExample]:
    examples: list[EvalExample] = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(f"Cannot read eval file {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
            last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.InvalidInput(
                f"{path}:{number}: an eval example needs a messages list ending with an assistant turn ({exc})."
            ) from exc
        examples.append(EvalExample(prompt=messages[:last], reference=str(messages[last].get("content") or "")))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise errors.InvalidInput(f"Eval file {path} has no examples.")
    return examples


@dataclass
class Answer:
    example: EvalExample
    text: str
    latency_s: float

    @property
    def exact(self) -> bool:
        return normalise(self.text) == normalise(self.example.reference)

    @property
    def f1(self) -> float:
        return token_f1(self.text, self.example.reference)


@dataclass
class TargetReport:
    label: str
    answers: list[Answer] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = len(self.answers) or 1
        return {
            "label": self.label,
            "examples": len(self.answers),
            "exact_match": round(sum(a.exact for a in self.answers) / n, 4),
            "token_f1": round(sum(a.f1 for a in self.answers) / n, 4),
            "mean_latency_s": round(sum(a.latency_s for a in self.answers) / n, 3),
        }

    def headline(self) -> str:
        s = self.summary()
        return f"{self.label}: exact match {s['exact_match']:.0%}, token F1 {s['token_f1']:.2f} on {s['examples']} examples"


@dataclass
class Target:
    label: str
    provider: "Provider"
    deployment: str


def evaluate_target(target: Target, examples: list[EvalExample], **chat_params: Any) -> TargetReport:
    report = TargetReport(target.label)
    params = {"max_tokens": 128, "temperature": 0, **chat_params}
    for example in examples:
        started = time.perf_counter()
        result = target.provider.chat(target.deployment, example.prompt, **params)
        report.answers.append(Answer(example, result.content, time.perf_counter() - started))
    return report


def evaluate_deployment(provider: "Provider", deployment: str, eval_file: Path, **chat_params: Any) -> TargetReport:
    return evaluate_target(Target(deployment, provider, deployment), load_eval_file(eval_file), **chat_params)


@dataclass
class Comparison:
    examples: list[EvalExample]
    reports: list[TargetReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [r.summary() for r in self.reports],
            "examples": [
                {
                    "question": ex.question,
                    "reference": ex.reference,
                    "answers": {r.label: r.answers[i].text for r in self.reports},
                }
                for i, ex in enumerate(self.examples)
            ],
        }

    def render_plain(self) -> str:
        lines = []
        for i, example in enumerate(self.examples):
            lines.append(f"Q{i + 1}: {example.question}")
            lines.append(f"  expected      : {example.reference}")
            for report in self.reports:
                lines.append(f"  {report.label:<14}: {report.answers[i].text.strip()}")
        lines.append("")
        lines.extend(r.headline() for r in self.reports)
        return "\n".join(lines)


def compare(targets: list[Target], eval_file: Path, *, limit: int | None = None, **chat_params: Any) -> Comparison:
    examples = load_eval_file(eval_file, limit=limit)
    return Comparison(examples, [evaluate_target(t, examples, **chat_params) for t in targets])
