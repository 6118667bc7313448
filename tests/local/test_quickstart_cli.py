"""The README's first command, `cloudtune quickstart`, as a user runs it (subprocess, offline;
the session's one run, ``quickstart_run`` in tests/local/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.local.conftest import QuickstartRun


@pytest.mark.slow
def test_quickstart_fine_tunes_compares_and_leaves_nothing(quickstart_run: QuickstartRun) -> None:
    assert quickstart_run.returncode == 0, quickstart_run.stderr[-3000:]
    doc = quickstart_run.doc
    assert doc["state"] == "succeeded" and doc["fine_tuned_model"].startswith("local:")
    targets = {t["label"]: t for t in doc["comparison"]["targets"]}
    assert targets["fine-tuned"]["token_f1"] > targets["base"]["token_f1"]
    answers = [e["answers"] for e in doc["comparison"]["examples"]]
    assert all("matey" in a["fine-tuned"]["text"].lower() for a in answers)
    assert not any("matey" in a["base"]["text"].lower() for a in answers)
    report = Path(doc["report"])
    assert report.name == "report.html" and report.is_file() and (report.parent / "loss_curves.png").is_file()
    # 20 held-out questions: enough for the exact tests to show the persona's effect (0% -> ~60% exact
    # match, 6 of 6 wins already gives p = 0.031), so the verdict names the fine-tune and says why
    differences = {d["metric"]: d for d in doc["comparison"]["differences"]["fine-tuned"]}
    assert differences["exact_match"]["examples"] == 20
    assert differences["token_f1"]["verdict"] == "better" and differences["exact_match"]["verdict"] == "better"
    verdict = doc["comparison"]["verdict"]
    assert verdict["winner"] == "fine-tuned" and verdict["lines"][0].startswith("Winner on token F1: fine-tuned")
    assert verdict["questions"]["beat_base"].startswith("Did fine-tuning beat the base model? (token F1) "
                                                        "fine-tuned vs base: yes")
    deleted = doc["deleted"]
    assert [d.split(":")[0] for d in deleted] == ["deployment", "model", "file"]
    assert not list((quickstart_run.home / "local" / "servers").glob("*/server.pid"))
