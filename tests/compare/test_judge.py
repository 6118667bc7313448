"""Pairwise judging against judges with known behaviour: emulated OpenAI fine-tunes trained on the
exact judge prompts, one that always says "first" (pure position bias) and one that always
prefers the right answer. Asking both orders must turn the first into a 50% win rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.judge import judge_pair, judge_prompt, order_score, parse_verdict
from cloudtune.compare.runner import Answer, Target, TargetReport
from cloudtune.types import FineTuneSpec
from tests.openai.conftest import BASE_MODEL, Emulated, emulated, provider  # noqa: F401 - fixtures

EXAMPLES = [EvalExample([{"role": "user", "content": f"What is the capital of country {i}?"}], f"City {i}.")
            for i in range(5)]
RIGHT = TargetReport("fine-tuned", [Answer(i, f"City {i}.", 0.1, scores={}) for i in range(5)])
WRONG = TargetReport("base", [Answer(i, "I do not know.", 0.1, scores={}) for i in range(5)])


def _judge(provider, emulated: Emulated, tmp_path: Path, verdict) -> Target:  # type: ignore[no-untyped-def]  # noqa: F811
    """A fine-tune on the OpenAI emulator that answers each judge prompt with ``verdict(target_first)``."""
    rows = []
    for example, right, wrong in zip(EXAMPLES, RIGHT.answers, WRONG.answers):
        for target_first in (True, False):
            first, second = (right.text, wrong.text) if target_first else (wrong.text, right.text)
            rows.append({"messages": [*judge_prompt(example, first or "", second or ""),
                                      {"role": "assistant", "content": verdict(target_first)}]})
    data = tmp_path / "judge.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = FineTuneSpec(provider="openai", base_model=BASE_MODEL, training_file=data)
    job = provider.create_job(spec, training_file_id=provider.upload_file(data), validation_file_id=None,
                              run_id="judge")
    emulated.sleep(100)
    model = provider.get_job(job.id).fine_tuned_model
    assert model
    return Target("judge", provider, model, kind="judge", provider_name="openai")


def test_position_bias_cancels_out(provider, emulated: Emulated, tmp_path: Path) -> None:  # noqa: F811
    always_first = _judge(provider, emulated, tmp_path, lambda target_first: "First.")
    result = judge_pair(always_first, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["asked"] == 10 and result["unparsed"] == 0 and result["failed"] == 0
    assert result["win_rate"] == 0.5 and result["within_noise"]


def test_a_consistent_judge_gives_a_real_win(provider, emulated: Emulated, tmp_path: Path) -> None:  # noqa: F811
    fair = _judge(provider, emulated, tmp_path, lambda target_first: "first" if target_first else "second")
    result = judge_pair(fair, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["win_rate"] == 1.0 and result["ci_low"] == 1.0 and result["within_noise"] is False
    reverse = judge_pair(fair, EXAMPLES, WRONG, RIGHT, concurrency=2, sleep=emulated.sleep).summary()
    assert reverse["win_rate"] == 0.0


@pytest.mark.parametrize(("reply", "verdict"), [("Second.", "second"), ("TIE", "tie"), ("The first one", "first"),
                                                ("no idea", None), ("", None)])
def test_verdicts_are_read_as_words(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_order_scores() -> None:
    assert order_score("first", target_first=True) == 1.0 and order_score("first", target_first=False) == 0.0
    assert order_score("second", target_first=False) == 1.0 and order_score("tie", target_first=True) == 0.5
    assert order_score(None, target_first=True) is None
