"""Pairwise judging against judges with known behaviour: emulated OpenAI fine-tunes trained on the
exact judge prompts, one that always says "first" (pure position bias) and one that always
prefers the right answer. Asking both orders must turn the first into a 50% win rate. Replies
must be one JSON verdict object; a bad reply is retried once, then counted as unparsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.judge import RETRY, judge_pair, judge_prompt, order_score, parse_verdict
from cloudtune.compare.runner import Answer, Target, TargetReport
from cloudtune.types import FineTuneSpec
from tests.openai.conftest import BASE_MODEL, Emulated, emulated, provider  # noqa: F401 - fixtures

EXAMPLES = [EvalExample([{"role": "user", "content": f"What is the capital of country {i}?"}], f"City {i}.")
            for i in range(8)]
RIGHT = TargetReport("fine-tuned", [Answer(i, f"City {i}.", 0.1, scores={}) for i in range(8)])
WRONG = TargetReport("base", [Answer(i, "I do not know.", 0.1, scores={}) for i in range(8)])


def _json(verdict: str) -> str:
    return json.dumps({"verdict": verdict, "reason": "compared with the reference"})


def _judge(provider, emulated: Emulated, tmp_path: Path, verdict, retry_reply: str | None = None) -> Target:  # type: ignore[no-untyped-def]  # noqa: F811
    """A fine-tune on the OpenAI emulator that answers each judge prompt with ``verdict(target_first)``
    (and the retry request with ``retry_reply``)."""
    rows = []
    if retry_reply is not None:
        rows.append({"messages": [{"role": "user", "content": RETRY}, {"role": "assistant", "content": retry_reply}]})
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


def test_position_bias_cancels_out_and_is_reported(provider, emulated: Emulated, tmp_path: Path) -> None:  # noqa: F811
    always_first = _judge(provider, emulated, tmp_path, lambda target_first: _json("first"))
    result = judge_pair(always_first, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["asked"] == 16 and result["unparsed"] == 0 and result["failed"] == 0 and result["retried"] == 0
    assert result["win_rate"] == 0.5 and result["within_noise"]
    # every decisive verdict named the first position; no example got the same answer preferred twice
    assert result["first_position_rate"] == 1.0 and result["consistent"] == 0


def test_a_consistent_judge_gives_a_real_win(provider, emulated: Emulated, tmp_path: Path) -> None:  # noqa: F811
    fair = _judge(provider, emulated, tmp_path, lambda target_first: _json("first" if target_first else "second"))
    result = judge_pair(fair, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["win_rate"] == 1.0 and result["ci_low"] == 1.0 and result["within_noise"] is False
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 8) and result["verdict"] == "better"
    assert result["first_position_rate"] == 0.5 and result["consistent"] == 8
    reverse = judge_pair(fair, EXAMPLES, WRONG, RIGHT, concurrency=2, sleep=emulated.sleep).summary()
    assert reverse["win_rate"] == 0.0


def test_loose_words_are_retried_once_then_counted_unparsed(provider, emulated: Emulated,  # noqa: F811
                                                            tmp_path: Path) -> None:
    loose = _judge(provider, emulated, tmp_path, lambda target_first: "First is worse than second.")
    result = judge_pair(loose, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["retried"] == 16 and result["unparsed"] == 16 and result["win_rate"] is None


def test_a_bad_reply_fixed_on_the_retry_counts(provider, emulated: Emulated, tmp_path: Path) -> None:  # noqa: F811
    judge = _judge(provider, emulated, tmp_path, lambda target_first: "tie, I think", retry_reply=_json("tie"))
    result = judge_pair(judge, EXAMPLES, RIGHT, WRONG, concurrency=2, sleep=emulated.sleep).summary()
    assert result["retried"] == 16 and result["unparsed"] == 0 and result["win_rate"] == 0.5


@pytest.mark.parametrize(("reply", "verdict"), [
    ('{"verdict": "second", "reason": "closer to the reference"}', "second"),
    ('  {"verdict": "TIE"}  ', "tie"),
    ('```json\n{"verdict": "first", "reason": "r"}\n```', "first"),
    ("first is worse than second", None),            # loose words are not a verdict
    ("Second.", None),
    ('{"verdict": "first"} and more text', None),     # not exactly one object
    ('{"verdict": "best"}', None),                    # not one of the three
    ('{"verdict": "first", "score": 3}', None),       # unknown key
    ('["first"]', None),
    ("", None),
])
def test_verdicts_must_be_one_json_object(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_the_emulators_answer_judge_prompts_with_a_verdict_object() -> None:
    from cloudtune.emulators.azure._hosts import chat_completion
    from cloudtune.emulators.openai.chat import reply

    prompt = judge_prompt(EXAMPLES[0], "I do not know.", "City 0.")
    content = reply("gpt-4o-mini", prompt, {}, 96)[0]
    assert parse_verdict(content) == "second"
    azure = chat_completion("gpt-4o-mini", judge_prompt(EXAMPLES[0], "City 0.", "City 0."))
    assert parse_verdict(azure["choices"][0]["message"]["content"]) == "tie"


def test_order_scores() -> None:
    assert order_score("first", target_first=True) == 1.0 and order_score("first", target_first=False) == 0.0
    assert order_score("second", target_first=False) == 1.0 and order_score("tie", target_first=True) == 0.5
    assert order_score(None, target_first=True) is None
