"""Pairwise judging: a judge deployment reads the question, the reference and two answers
and says which is better. Each pair is asked in both orders so a judge that favours
the first (or second) position cancels out (Zheng et al. 2023, "Judging LLM-as-a-Judge
with MT-Bench and Chatbot Arena", section 3.4: swap positions, count a win only
when consistent; here each order counts half), and how often it picked the first
position is reported as its position bias.

The verdict format is strict: the reply must be exactly one JSON object
``{"verdict": "first" | "second" | "tie", "reason": "..."}`` (a single ```json fence
around it is tolerated). A reply that is not gets one retry that quotes the rule again;
a second bad reply is counted as unparsed and shown, never guessed from loose words
("first is worse" is not "first").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cloudtune import timescale
from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.runner import Target, TargetReport
from cloudtune.compare.stats import paired_difference

JUDGE_DECODING: dict[str, Any] = {"temperature": 0, "max_tokens": 64}
VERDICTS = ("first", "second", "tie")
INSTRUCTION = ("Which answer to the question is better, judged against the reference answer? Reply with exactly "
               'one JSON object and nothing else: {"verdict": "first" | "second" | "tie", "reason": "<one sentence>"}.')
RETRY = ('That was not one JSON object. Reply with only {"verdict": "first" | "second" | "tie", '
         '"reason": "<one sentence>"}.')


def judge_prompt(example: EvalExample, first: str, second: str) -> list[dict[str, str]]:
    """The inputs travel as one JSON object after the instruction, so no answer text can be
    mistaken for a section of the prompt."""
    inputs = {"question": example.question, "reference": example.reference, "first": first, "second": second}
    return [{"role": "user", "content": f"{INSTRUCTION}\n\nInputs: {json.dumps(inputs, ensure_ascii=False)}"}]


def parse_verdict(text: str | None) -> str | None:
    """'first' | 'second' | 'tie' from a reply that is exactly one valid verdict object; else None."""
    body = (text or "").strip()
    if body.startswith("```") and body.endswith("```") and body.count("```") == 2:
        body = body[3:-3].strip()
        if body.lower().startswith("json"):
            body = body[4:].strip()
    try:
        found = json.loads(body)
    except ValueError:
        return None
    if not isinstance(found, dict) or not set(found) <= {"verdict", "reason"}:
        return None
    verdict, reason = found.get("verdict"), found.get("reason", "")
    if not isinstance(verdict, str) or verdict.strip().lower() not in VERDICTS or not isinstance(reason, str):
        return None
    return verdict.strip().lower()


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
    retried: int = 0
    failed: int = 0
    per_example: list[float | None] = field(default_factory=list)  # mean of both orders
    verdicts: list[list[str | None]] = field(default_factory=list)  # [target first, baseline first]
    replies: list[list[str | None]] = field(default_factory=list)  # the judge's last reply per order

    def position_bias(self) -> dict[str, Any]:
        """How often a decisive verdict named the first position (0.5 = no bias), and how many
        examples got the same answer preferred in both orders."""
        decisive = [v for pair in self.verdicts for v in pair if v in ("first", "second")]
        both = [pair for pair in self.verdicts if len(pair) == 2 and None not in pair]
        consistent = sum(order_score(a, True) == order_score(b, False) for a, b in both)
        return {"first_position_rate": round(decisive.count("first") / len(decisive), 4) if decisive else None,
                "decisive_verdicts": len(decisive), "both_orders_parsed": len(both), "consistent": consistent}

    def summary(self) -> dict[str, Any]:
        scores = [s for s in self.per_example if s is not None]
        out: dict[str, Any] = {"target": self.target, "baseline": self.baseline, "judge": self.judge,
                               "asked": self.asked, "unparsed": self.unparsed, "retried": self.retried,
                               "failed": self.failed, "judged_examples": len(scores), "win_rate": None,
                               "ci_low": None, "ci_high": None, "within_noise": None, "p_value": None,
                               "verdict": None, **self.position_bias()}
        if scores:
            d = paired_difference("win_rate", scores, [0.5] * len(scores))
            out.update(win_rate=round(sum(scores) / len(scores), 4),
                       ci_low=None if d.low is None else round(max(0.0, d.low + 0.5), 4),
                       ci_high=None if d.high is None else round(min(1.0, d.high + 0.5), 4),
                       within_noise=d.within_noise, p_value=d.p_value, verdict=d.verdict)
        return out


def _ask_judge(judge: Target, prompt: list[dict[str, str]], sleep: Callable[[float], None]) -> tuple[str | None, str, bool]:
    """(verdict, last reply, retried): one retry when the first reply is not a verdict object."""
    from cloudtune.retry import call_with_retries

    def chat(messages: list[dict[str, str]]) -> str:
        reply = call_with_retries(lambda: judge.provider.chat(judge.deployment, messages, **JUDGE_DECODING),
                                  sleep=sleep, translate=judge.provider.translate_error)
        return reply.content or ""

    first = chat(prompt)
    verdict = parse_verdict(first)
    if verdict is not None:
        return verdict, first, False
    second = chat([*prompt, {"role": "assistant", "content": first}, {"role": "user", "content": RETRY}])
    return parse_verdict(second), second, True


def judge_pair(judge: Target, examples: list[EvalExample], target: TargetReport, baseline: TargetReport, *,
               concurrency: int = 4, sleep: Callable[[float], None] = timescale.sleep) -> JudgeResult:
    result = JudgeResult(target.label, baseline.label, judge.label)

    def one(index: int) -> tuple[list[str | None], list[str | None], float | None, int, int, int]:
        """(verdicts, replies, score, orders asked, retries, failed requests) for one example."""
        mine, theirs = target.answers[index], baseline.answers[index]
        if not (mine.ok and theirs.ok):
            return [], [], None, 0, 0, 0  # nothing to judge where either side has no answer
        verdicts: list[str | None] = []
        replies: list[str | None] = []
        scores: list[float] = []
        failed = retried = 0
        for target_first in (True, False):
            first, second = (mine.text, theirs.text) if target_first else (theirs.text, mine.text)
            try:
                verdict, reply, again = _ask_judge(judge, judge_prompt(examples[index], first or "", second or ""),
                                                   sleep)
                retried += again
            except Exception as exc:  # noqa: BLE001 - counted as a failed judgement, the report goes on
                failed += 1
                verdict, reply = None, f"failed: {type(exc).__name__}: {exc}"
            verdicts.append(verdict)
            replies.append(reply)
            score = order_score(verdict, target_first)
            if score is not None:
                scores.append(score)
        return verdicts, replies, (sum(scores) / len(scores) if scores else None), 2, retried, failed

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for verdicts, replies, score, asked, retried, failed in pool.map(one, range(len(examples))):
            result.verdicts.append(verdicts)
            result.replies.append(replies)
            result.per_example.append(score)
            result.asked += asked
            result.retried += retried
            result.failed += failed
            result.unparsed += sum(v is None for v in verdicts) - failed  # a failed request has no verdict either
    return result
