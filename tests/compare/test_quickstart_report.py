"""The quickstart's comparison step (base vs fine-tuned on the local provider, report written under
CLOUDTUNE_HOME/reports/<run id>/), on a real tiny model trained in the test."""

from __future__ import annotations

import json
from pathlib import Path

from cloudtune.compare.quickstart_report import compare_base_and_fine_tuned
from cloudtune.ledger import Ledger
from cloudtune.pipeline import Pipeline
from cloudtune.poller import wait_for_deployment
from cloudtune.types import FineTuneSpec
from tests.local.conftest import (  # noqa: F401 - fixtures
    chat_example,
    fast_hyperparameters,
    local_home,
    provider,
    tiny_model_dir,
    write_training_file,
)


def test_quickstart_comparison_writes_the_report(provider, local_home: Path, tiny_model_dir: Path,  # noqa: F811
                                                 tmp_path: Path) -> None:
    training = write_training_file(tmp_path / "train.jsonl")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(chat_example(i)) + "\n" for i in range(20, 24)))
    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training, eval_file=heldout,
                        hyperparameters=fast_hyperparameters(epochs=2), seed=3)
    ledger = Ledger()
    run = ledger.create_run(spec)
    Pipeline(ledger, provider).run(run)
    assert run.status == "succeeded", run.error
    provider.deploy(str(tiny_model_dir), name="ct-base-quick")
    wait_for_deployment(provider, "ct-base-quick", target="ready", timeout_s=300)

    comparison, page = compare_base_and_fine_tuned(run, provider, "ct-base-quick", max_tokens=8)

    assert page == local_home / "reports" / run.run_id / "report.html" and page.is_file()
    assert {p.name for p in page.parent.iterdir()} >= {"report.md", "loss_curves.png", "metrics.png",
                                                        "examples.jsonl"}
    doc = comparison.to_dict()
    assert [t["label"] for t in doc["targets"]] == ["base", "fine-tuned"]
    assert all(t["answered"] == 4 and t["inference_cost_usd"] is None for t in doc["targets"])
    assert doc["settings"]["decoding"]["max_tokens"] == 8
    assert {d["metric"] for d in doc["differences"]["fine-tuned"]} == {"exact_match", "token_f1", "rouge_l"}
    (facts,) = doc["runs"]
    assert facts["train_curve"] and facts["trained_tokens"] and facts["training_cost_usd"] is None
