"""`cloudtune compare` end to end against the OpenAI emulator: every figure, the intervals,
a judge asked in both orders, failing examples counted, a broken eval file refused, and
the HTML report rendered by a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compare.conftest import KEY, OpenAISession, last_json, write_jsonl

FT, BASE, SHOT = "openai fine-tuned", "openai base", "openai 2-shot"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def full(openai_session: OpenAISession, openai_run: str) -> dict:
    done = openai_session("compare", openai_run, "--eval", "eval.jsonl", "--baseline", "base", "--few-shot", "2",
                          "--judge", "openai:gpt-4o-mini", "--report", "report", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done)


def test_every_figure_per_target(full: dict) -> None:
    targets = {t["label"]: t for t in full["targets"]}
    assert set(targets) == {FT, BASE, SHOT}
    # the emulated fine-tune learned the 4 eval questions that were in its training data
    assert targets[FT]["exact_match"] == 0.5 and targets[BASE]["exact_match"] == 0.0
    for t in targets.values():
        assert t["answered"] == 8 and t["failed_requests"] == 0
        assert 0 <= t["token_f1"] <= 1 and 0 <= t["rouge_l"] <= 1
        assert 0 < t["mean_latency_s"] <= t["p95_latency_s"]
        assert t["prompt_tokens"] > 0 and t["completion_tokens"] > 0
    # cost from the catalog: fine-tuned gpt-4o-mini 0.30/1.20, base 0.15/0.60 USD per 1M tokens
    ft = targets[FT]
    assert ft["inference_cost_usd"] == pytest.approx((ft["prompt_tokens"] * 0.30 + ft["completion_tokens"] * 1.20) / 1e6,
                                                     abs=1e-6)
    base = targets[BASE]
    assert base["price_per_1m_tokens"] == [0.15, 0.60]
    # the two training examples went in front of every few-shot prompt
    assert targets[SHOT]["prompt_tokens"] > base["prompt_tokens"]
    assert full["settings"]["decoding"] == {"temperature": 0, "max_tokens": 128}
    assert full["settings"]["few_shot"]["k"] == 2 and "rougeL" in full["settings"]["rouge"]


def test_differences_carry_intervals_and_say_what_is_real(full: dict) -> None:
    exact = {d["metric"]: d for d in full["differences"][FT]}["exact_match"]
    assert exact["difference"] == pytest.approx(0.5) and exact["low"] > 0 and not exact["within_noise"]
    assert exact["examples"] == 8
    assert any(line.startswith("exact_match: openai fine-tuned is better than openai base") for line in
               full["statements"])
    same = {d["metric"]: d for d in full["differences"][SHOT]}["exact_match"]
    assert same["within_noise"]
    worse = full["worse_than_baseline"]
    assert worse and {w["target"] for w in worse} == {FT}
    assert all(w["token_f1"] < w["baseline_token_f1"] for w in worse)


def test_training_figures_come_from_the_job(full: dict) -> None:
    (run,) = full["runs"]
    assert run["trained_tokens"] > 0 and run["training_time_s"] is not None
    assert run["training_cost_usd"] == pytest.approx(run["trained_tokens"] * 3.00 / 1e6, abs=1e-4)
    assert run["final_train_loss"] is not None and len(run["train_curve"]) > 5


def test_judge_is_asked_both_orders(full: dict, openai_session: OpenAISession) -> None:
    for judged in full["judge"]:
        assert judged["asked"] == 16  # 8 examples x 2 orders
        # the emulator's judge answers are not verdicts: counted, never guessed
        assert judged["unparsed"] == 16 and judged["win_rate"] is None
    assert any("no usable verdict" in line for line in full["statements"])


def test_report_files_are_self_contained(full: dict, openai_session: OpenAISession) -> None:
    folder = openai_session.tmp / "report"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]["answers"]) == {FT, BASE, SHOT}
    assert {"text", "exact_match", "token_f1", "rouge_l"} <= set(rows[0]["answers"][FT])
    markdown = (folder / "report.md").read_text()
    assert "Examples where the fine-tune is worse than the baseline" in markdown and "within noise" in markdown
    # the base model's comparison deployment was removed again
    names = json.loads((openai_session.tmp / "home" / "openai" / "deployments.json").read_text())
    assert not [n for names_ in names.values() for n in names_["names"] if n.startswith("ct-base-")]


def test_report_renders_in_headless_chromium(full: dict, openai_session: OpenAISession, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    assert shutil.which(CHROMIUM), "Debian chromium is missing: scripts/setup.sh installs it"
    shot = tmp_path / "shot.png"
    page = (openai_session.tmp / "report" / "report.html").resolve()
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1600, 1200)
    charts = pixels[80:420, :, :]  # the two charts sit under the title
    not_white = (charts.sum(axis=2) < 720).mean()
    assert not_white > 0.03, f"chart region is blank ({not_white:.1%} ink)"
    # the bars of the first target are drawn in matplotlib's first colour, #1f77b4
    blue = (np.abs(charts - np.array([0x1F, 0x77, 0xB4])).sum(axis=2) < 30).sum()
    assert blue > 500, f"only {blue} pixels of the first target's bars"
    below = pixels[1400:, :, :]
    assert (below.sum(axis=2) < 720).mean() > 0.001  # the tables rendered too


def test_failing_examples_are_counted_and_listed(openai_session: OpenAISession, openai_run: str) -> None:
    before = openai_session.control("/_emulator/state")["chat_requests"]
    # the fine-tuned target is asked first: its first two requests are refused outright (400,
    # not retried), one more meets a transient 503 that the retry rules absorb
    openai_session.control("/_emulator/faults", [
        {"route": "POST /v1/chat/completions$", "status": 400, "times": 2, "message": "injected failure"},
        {"route": "POST /v1/chat/completions$", "status": 503, "times": 1},
    ])
    done = openai_session("compare", openai_run, "--eval", "eval.jsonl", "--baseline", "base", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = last_json(done)
    targets = {t["label"]: t for t in doc["targets"]}
    assert (targets[FT]["answered"], targets[FT]["failed_requests"]) == (6, 2)
    assert (targets[BASE]["answered"], targets[BASE]["failed_requests"]) == (8, 0)
    assert len(doc["failures"]) == 2 and all(f["target"] == FT for f in doc["failures"])
    assert all("injected failure" in f["error"] for f in doc["failures"])
    assert {d["examples"] for d in doc["differences"][FT]} == {6}  # paired over both-answered examples
    hits = openai_session.control("/_emulator/faults")["hits"]
    assert len([h for h in hits if "chat/completions" in h]) == 3
    # 16 questions: 2 refused by the fault layer, 14 answered (the 503 one on its retry)
    assert openai_session.control("/_emulator/state")["chat_requests"] - before == 14


def test_broken_eval_file_is_refused_by_line_before_any_request(openai_session: OpenAISession,
                                                                 openai_run: str) -> None:
    bad = openai_session.tmp / "bad.jsonl"
    write_jsonl(bad, [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}])
    with bad.open("a") as out:
        out.write('{"messages": [{"role": "user", "content": "unterminated"\n')
    before = openai_session.control("/_emulator/state")["chat_requests"]
    done = openai_session("compare", openai_run, "--eval", "bad.jsonl")
    assert done.returncode == 2, done.stderr
    assert "bad.jsonl:2" in done.stderr
    assert openai_session.control("/_emulator/state")["chat_requests"] == before


# Runs the CLI in an interpreter where the named modules cannot be imported, as on a machine
# installed without the compare extra.
_WITHOUT = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NotInstalled())
from cloudtune.cli import main
sys.exit(main(sys.argv[1:]))
"""


# (matplotlib needs numpy: without numpy both are missing)
@pytest.mark.parametrize(("blocked", "named"), [({"numpy"}, "numpy, matplotlib"), ({"matplotlib"}, "matplotlib"),
                                                ({"rouge_score"}, "rouge-score")])
def test_a_missing_compare_extra_is_an_install_hint_before_any_request(openai_session: OpenAISession,
                                                                       openai_run: str, blocked: set[str],
                                                                       named: str) -> None:
    before = openai_session.control("/_emulator/state")["chat_requests"]
    code = f"BLOCKED = {sorted(blocked)!r}\n" + _WITHOUT
    done = subprocess.run([sys.executable, "-c", code, "compare", openai_run, "--eval", "eval.jsonl", "--report",
                           "no-report"], cwd=openai_session.tmp, env=openai_session.env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"needs {named}, which" in done.stderr and "pip install 'cloudtune[compare]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert openai_session.control("/_emulator/state")["chat_requests"] == before
    assert not (openai_session.tmp / "no-report").exists()


def test_report_files_are_private_and_hold_no_secret(openai_session: OpenAISession, openai_run: str) -> None:
    import stat

    # a failed request whose error message echoes the API key and a token-shaped secret
    planted = "sk-proj-PlantedSecretValue123456"
    openai_session.control("/_emulator/faults", [
        {"route": "POST /v1/chat/completions$", "status": 400, "times": 1,
         "message": f"bad request from key {KEY}, also saw {planted}"},
    ])
    done = openai_session("compare", openai_run, "--eval", "eval.jsonl", "--report", "private-report", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_json(done)["targets"][0]["failed_requests"] == 1
    folder = openai_session.tmp / "private-report"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert {f.name for f in files} == {"report.md", "report.html", "examples.jsonl", "metrics.png", "loss_curves.png"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        content = path.read_bytes()
        assert KEY.encode() not in content and planted.encode() not in content, path
    listed = (folder / "report.md").read_text()
    assert "bad request from key" in listed  # the failure is still listed, its secrets masked
    assert KEY not in done.stdout + done.stderr and planted not in done.stdout + done.stderr
