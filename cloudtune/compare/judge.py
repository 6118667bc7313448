"""Pairwise judging: a judge deployment reads the question, the reference and two answers
and says which is better. Each pair is asked in both orders so a judge that favours
the first (or second) position cancels out (Zheng et al. 2023, "Judging LLM-as-a-Judge
with MT-Bench and Chatbot Arena", section 3.4: swap positions, count a win only
when consistent; here each order counts half).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cloudtune import timescale
from cloudtune.compare.bootstrap import paired_bootstrap
from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.runner import Target, TargetReport

JUDGE_DECODING: dict[str, Any] = {"temperature": 0, "max_tokens": 8}
_VERDICT = re.compile(r"\b(first|second|tie)\b", re.IGNORECASE)
_INSTRUCTION = ("Compare two answers to the question below and decide which is better, "
                "using the reference answer as ground truth. Reply with one word: first, second or tie.")


def judge_prompt(example: EvalExample, first: str, second: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": (
        f"{_INSTRUCTION}\n\nQuestion: {example.question}\n\nReference: {example.reference}\n\n"
        f"First answer: {first}\n\nSecond answer: {second}\n\nVerdict (first, second or tie):")}]


def parse_verdict(text: str) -> str | None:
    """'first' | 'second' | 'tie', or None when the judge said none of them."""
    match = _VERDICT.search(text or "")
    return match.group(1).lower() if match else None


def order_score(verdict: str | None, target_first: bool) -> float | None:
    """1 when the judge preferred the target, 0 the baseline, 0.5 a tie; None unparsed."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if (verdict == "first") == target_first else 0.0


@dataclass
class JudgeResult:
    target: str
    baseline: str
    judge: str
    asked: int = 0
    unparsed: int = 0
    failed: int = 0
    per_example: list[float | None] = field(default_factory=list)  # mean of both orders
    verdicts: list[list[str | None]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        scores = [s for s in self.per_example if s is not None]
        out: dict[str, Any] = {"target": self.target, "baseline": self.baseline, "judge": self.judge,
                               "asked": self.asked, "unparsed": self.unparsed, "failed": self.failed,
                               "judged_examples": len(scores), "win_rate": None, "ci_low": None, "ci_high": None,
                               "within_noise": None}
        if scores:
            interval = paired_bootstrap("win_rate", scores, [0.5] * len(scores))
            out.update(win_rate=round(sum(scores) / len(scores), 4), ci_low=round(interval.low + 0.5, 4),
                       ci_high=round(interval.high + 0.5, 4), within_noise=interval.within_noise)
        return out


def judge_pair(judge: Target, examples: list[EvalExample], target: TargetReport, baseline: TargetReport, *,
               concurrency: int = 4, sleep: Callable[[float], None] = timescale.sleep) -> JudgeResult:
    from cloudtune.retry import call_with_retries

    result = JudgeResult(target.label, baseline.label, judge.label)

    def one(index: int) -> tuple[list[str | None], float | None, int, int]:
        """(verdicts, score, requests asked, requests failed) for one example."""
        mine, theirs = target.answers[index], baseline.answers[index]
        if not (mine.ok and theirs.ok):
            return [], None, 0, 0  # nothing to judge where either side has no answer
        verdicts: list[str | None] = []
        scores: list[float] = []
        failed = 0
        for target_first in (True, False):
            first, second = (mine.text, theirs.text) if target_first else (theirs.text, mine.text)
            prompt = judge_prompt(examples[index], first or "", second or "")
            try:
                reply = call_with_retries(lambda p=prompt: judge.provider.chat(judge.deployment, p, **JUDGE_DECODING),
                                          sleep=sleep, translate=judge.provider.translate_error)
                verdict = parse_verdict(reply.content)
            except Exception:  # noqa: BLE001 - counted as a failed judgement, the report goes on
                failed += 1
                verdict = None
            verdicts.append(verdict)
            score = order_score(verdict, target_first)
            if score is not None:
                scores.append(score)
        return verdicts, (sum(scores) / len(scores) if scores else None), 2, failed

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for verdicts, score, asked, failed in pool.map(one, range(len(examples))):
            result.verdicts.append(verdicts)
            result.per_example.append(score)
            result.asked += asked
            result.failed += failed
            result.unparsed += sum(v is None for v in verdicts) - failed  # a failed request has no verdict either
    return result
