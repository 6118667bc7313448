"""`--judge local:MODEL`: a local model is deployed for the comparison, asked in both orders with
the strict verdict format, and removed afterwards. A tiny random model never writes a verdict
object: every reply is retried once and then counted as unparsed, never guessed."""

from __future__ import annotations

from pathlib import Path

from cloudtune.compare.command import BaseDeployments, _judge_target
from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.judge import judge_pair
from cloudtune.compare.runner import Answer, TargetReport
from cloudtune.ledger import Ledger
from tests.local.conftest import local_home, provider, tiny_model_dir  # noqa: F401 - fixtures

EXAMPLES = [EvalExample([{"role": "user", "content": f"Q{i}?"}], f"A{i}.") for i in range(2)]


def test_a_local_model_judges_and_is_removed_afterwards(provider, local_home: Path,  # noqa: F811
                                                        tiny_model_dir: Path) -> None:  # noqa: F811
    opened: list = []
    bases = BaseDeployments()
    try:
        judge = _judge_target(f"local:{tiny_model_dir}", Ledger(), opened, bases)
        assert judge.deployment.startswith("ct-judge-") and judge.provider_name == "local"
        right = TargetReport("fine-tuned", [Answer(i, f"A{i}.", 0.1) for i in range(2)])
        wrong = TargetReport("base", [Answer(i, "No.", 0.1) for i in range(2)])
        judged = judge_pair(judge, EXAMPLES, right, wrong, concurrency=1)
        result = judged.summary()
    finally:
        bases.remove()
        for opened_provider in opened:
            opened_provider.close()
    assert result["asked"] == 4 and result["failed"] == 0, judged.replies
    assert result["retried"] == 4 and result["unparsed"] == 4 and result["win_rate"] is None
    assert not [d for d in provider.list_deployments() if d.name.startswith("ct-judge-")]
