"""The verdict on comparisons whose answers are known: a winner only when it beats every other
target after Holm's adjustment, the three questions answered in one line each, and answers that
overlap the reference without being right flagged for review."""

from __future__ import annotations

from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.metrics import close_but_wrong, score_answer
from cloudtune.compare.report import Comparison
from cloudtune.compare.runner import Answer, Target, TargetReport
from cloudtune.compare.verdict import verdict


def _comparison(n: int, answers: dict[str, tuple[str, str, object]]) -> Comparison:
    """``answers``: label -> (kind, run id, function index -> answer text)."""
    examples = [EvalExample([{"role": "user", "content": f"Capital of country {i}?"}], f"City {i}.") for i in range(n)]
    reports = []
    for label, (kind, run_id, answer) in answers.items():
        target = Target(label, None, "dep", kind, label.split()[0], run_id, price=(0.3, 1.2))  # type: ignore[arg-type]
        reports.append(TargetReport(label, [Answer(i, answer(i), 0.2, 10, 5,  # type: ignore[operator]
                                                   scores=score_answer(answer(i), examples[i].reference))  # type: ignore[operator]
                                            for i in range(n)], target))
    baselines = {label: f"{label.split()[0]} base" for label, (kind, _, _) in answers.items() if kind != "base"}
    return Comparison(examples, reports, baselines=baselines)


def test_a_clear_winner_is_named_with_the_three_questions() -> None:
    found = verdict(_comparison(12, {
        "openai fine-tuned": ("fine-tuned", "r1", lambda i: f"City {i}."),
        "openai base": ("base", "r1", lambda i: "I do not know."),
        "openai 2-shot": ("few-shot", "r1", lambda i: "Maybe a town."),
    }))
    assert found["winner"] == "openai fine-tuned" and [r["label"] for r in found["ranking"]][0] == "openai fine-tuned"
    assert found["lines"][0] == "Winner on token F1: openai fine-tuned, better than every other target (Holm-adjusted)."
    assert "openai fine-tuned vs openai base: yes" in found["questions"]["beat_base"]
    assert "openai fine-tuned vs openai 2-shot: yes" in found["questions"]["beat_few_shot"]
    assert "Only one fine-tune, openai fine-tuned" in found["questions"]["best_fine_tune"]
    assert "USD 0.0090 per 1,000 answers" in found["questions"]["best_fine_tune"]  # (10 x 0.3 + 5 x 1.2) / 1e6 x 1000


def test_at_five_examples_no_winner_and_too_few_examples_to_tell() -> None:
    found = verdict(_comparison(5, {
        "local fine-tuned": ("fine-tuned", "r1", lambda i: f"City {i}." if i < 3 else "No idea."),
        "local base": ("base", "r1", lambda i: "No idea."),
    }))
    assert found["winner"] is None
    assert found["lines"][0].startswith("No winner on token F1: local fine-tuned ranks first but is not clearly "
                                        "better than local base (too few examples to tell)")
    assert "too few examples to tell" in found["questions"]["beat_base"]
    assert found["questions"]["beat_few_shot"].endswith("Not asked in this comparison (compare --few-shot K asks it).")


def test_fine_tunes_of_several_providers_are_compared_with_each_other() -> None:
    found = verdict(_comparison(20, {
        "openai fine-tuned": ("fine-tuned", "r1", lambda i: f"City {i}."),
        "openai base": ("base", "r1", lambda i: "No idea."),
        "azure fine-tuned": ("fine-tuned", "r2", lambda i: f"City {i}." if i % 4 == 0 else "No idea."),
        "azure base": ("base", "r2", lambda i: "No idea."),
    }))
    best = found["questions"]["best_fine_tune"]
    assert best.startswith("Which provider's fine-tune is best? openai fine-tuned, better on token F1 than "
                           "azure fine-tuned"), best
    assert "azure fine-tuned: USD" in best and "mean latency" in best
    # with only 6 of 12 examples apart, the same gap is not enough once Holm counts every pair
    close = verdict(_comparison(12, {
        "openai fine-tuned": ("fine-tuned", "r1", lambda i: f"City {i}."),
        "openai base": ("base", "r1", lambda i: "No idea."),
        "azure fine-tuned": ("fine-tuned", "r2", lambda i: f"City {i}." if i % 2 else "No idea."),
        "azure base": ("base", "r2", lambda i: "No idea."),
    }))
    assert "no clear best: openai fine-tuned ranks first" in close["questions"]["best_fine_tune"]


def test_close_but_wrong_answers_are_flagged() -> None:
    scores = score_answer("Grass is a color", "Grass is green")
    assert scores["exact_match"] == 0 and scores["rouge_l"] >= 0.5 and close_but_wrong(scores)
    assert not close_but_wrong(score_answer("Grass is green", "Grass is green"))  # right
    assert not close_but_wrong(score_answer("The sky", "Grass is green"))  # plainly wrong
    rows = _comparison(3, {"openai fine-tuned": ("fine-tuned", "r1", lambda i: f"City {i} maybe"),
                           "openai base": ("base", "r1", lambda i: "No idea.")}).example_rows()
    assert all(row["answers"]["openai fine-tuned"]["close_but_wrong"] for row in rows)
    assert all(row["disagreement"] for row in rows)  # 0.8 token F1 against 0
