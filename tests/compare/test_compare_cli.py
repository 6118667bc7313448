"""`cloudtune compare` end to end against the OpenAI emulator: every figure, the intervals,
a judge asked in both orders, failing examples counted, a broken eval file refused, and
the HTML report rendered by a real headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

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


def test_differences_carry_exact_tests_and_say_only_what_the_data_allow(full: dict) -> None:
    exact = {d["metric"]: d for d in full["differences"][FT]}["exact_match"]
    # the fine-tune learned 4 of 8 questions, the base none: 4 wins, 0 losses, 4 ties; an exact
    # sign test gives p = 2 * 0.5**4 = 0.125, so 8 questions cannot call it real
    assert exact["difference"] == pytest.approx(0.5) and exact["examples"] == 8
    assert (exact["wins"], exact["losses"]) == (4, 0) and exact["p_value"] == pytest.approx(0.125)
    assert exact["p_holm"] >= exact["p_value"] and exact["verdict"] == "no clear difference" and exact["within_noise"]
    assert exact["needed"] and exact["needed"] > 8
    line = next(x for x in full["statements"] if x.startswith("exact_match: no clear difference between "
                                                                  "openai fine-tuned and openai base"))
    assert "p=0.125" in line and "examples would be needed" in line
    # every pair on every metric, Holm-adjusted per metric
    pairs = {(p["target"], p["other"], p["metric"]): p for p in full["pairs"]}
    assert (FT, SHOT, "token_f1") in pairs  # the fine-tune against few-shot, directly
    worse = full["worse_than_baseline"]
    assert worse and {w["target"] for w in worse} == {FT}
    assert all(w["token_f1"] < w["baseline_token_f1"] for w in worse)


def test_the_verdict_ranks_every_target_and_names_no_winner_the_data_do_not(full: dict) -> None:
    verdict = full["verdict"]
    assert verdict["metric"] == "token_f1"
    ranking = verdict["ranking"]
    assert {r["label"] for r in ranking} == {FT, BASE, SHOT} and [r["rank"] for r in ranking] == [1, 2, 3]
    means = [r["mean"] for r in ranking]
    assert means == sorted(means, reverse=True)
    assert all(r["low"] <= r["mean"] <= r["high"] for r in ranking)
    assert verdict["winner"] is None and verdict["lines"][0].startswith("No winner on token F1")
    assert verdict["questions"]["beat_base"].startswith("Did fine-tuning beat the base model?")
    assert f"{FT} vs {SHOT}" in verdict["questions"]["beat_few_shot"]
    assert "per 1,000 answers" in verdict["questions"]["best_fine_tune"]


def test_provenance_is_recorded(full: dict) -> None:
    import cloudtune

    provenance = full["settings"]["provenance"]
    assert provenance["cloudtune_version"] == cloudtune.__version__
    assert len(provenance["eval_sha256"]) == 64 and "git_commit" in provenance
    (rows,) = full["settings"]["few_shot"]["rows"].values()
    assert len(rows) == 2 and all(1 <= r <= 12 for r in rows)  # line numbers in the 12-line training file


def test_training_figures_come_from_the_job(full: dict) -> None:
    (run,) = full["runs"]
    assert run["trained_tokens"] > 0 and run["training_time_s"] is not None
    assert run["training_cost_usd"] == pytest.approx(run["trained_tokens"] * 3.00 / 1e6, abs=1e-4)
    assert run["final_train_loss"] is not None and len(run["train_curve"]) > 5


def test_judge_is_asked_both_orders(full: dict, openai_session: OpenAISession) -> None:
    judged = {j["target"]: j for j in full["judge"]}
    for j in judged.values():
        assert j["asked"] == 16  # 8 examples x 2 orders
        # the emulator answers judge prompts with one JSON verdict: every one parsed
        assert j["unparsed"] == 0 and j["failed"] == 0 and j["win_rate"] is not None
        assert j["both_orders_parsed"] == 8
    # the emulated judge prefers the answer whose words are closer to the reference, in both orders:
    # the fine-tune wins the questions it learned and loses where its fallback reply is further off
    closer = [(a[FT]["token_f1"] > a[BASE]["token_f1"]) - (a[FT]["token_f1"] < a[BASE]["token_f1"])
              for a in (e["answers"] for e in full["examples"])]
    assert judged[FT]["win_rate"] == sum(0.5 + c / 2 for c in closer) / 8 and judged[FT]["consistent"] == 8
    assert judged[FT]["first_position_rate"] == 0.5
    # the 2-shot prompt and the base model answer the same here: all ties, no decisive verdict to judge bias by
    assert judged[SHOT]["win_rate"] == 0.5 and judged[SHOT]["first_position_rate"] is None
    # every verdict and reply is kept per example, both orders
    kept = full["examples"][0]["judge"][f"{FT} vs {BASE}"]
    assert len(kept["verdicts"]) == 2 and all(json.loads(reply)["verdict"] for reply in kept["replies"])
    assert any(line.startswith(f"judge openai:gpt-4o-mini: {FT} wins") for line in full["statements"])


def test_report_files_are_self_contained(full: dict, openai_session: OpenAISession) -> None:
    folder = openai_session.tmp / "report"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page and " src='http" not in page
    assert page.index("id='verdict'") < page.index("id='charts'")  # the verdict comes first
    assert page.count("<script>") == 1 and "<script src" not in page  # inline only
    assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]["answers"]) == {FT, BASE, SHOT}
    assert {"text", "exact_match", "token_f1", "rouge_l", "close_but_wrong", "worse_than_baseline",
            "prompt_tokens"} <= set(rows[0]["answers"][FT])
    assert all("disagreement" in row and row["question"] for row in rows)
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# cloudtune compare\n\n## Verdict")
    assert "Examples where the fine-tune is worse than the baseline" in markdown and "no clear difference" in markdown
    # the base model's comparison deployment was removed again
    names = json.loads((openai_session.tmp / "home" / "openai" / "deployments.json").read_text())
    assert not [n for names_ in names.values() for n in names_["names"] if n.startswith("ct-base-")]


def _chromium(tmp_path: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which(CHROMIUM), "Debian chromium is missing: scripts/setup.sh installs it"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         *flags, url], capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(full: dict, openai_session: OpenAISession, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    page = (openai_session.tmp / "report" / "report.html").resolve()
    done = _chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1600, 1200)
    assert (pixels.sum(axis=2) < 720).mean() > 0.03, "the page is blank"
    # the bars of the first target are drawn in the palette's first colour, #1f77b4
    blue = (np.abs(pixels - np.array([0x1F, 0x77, 0xB4])).sum(axis=2) < 30).sum()
    assert blue > 500, f"only {blue} pixels of the first target's bars"


def _rows(dom: str) -> list[tuple[str, bool]]:
    """(data-index, shown) of each row of the all-examples table in a DOM chromium dumped."""
    from html.parser import HTMLParser

    found: list[tuple[str, bool]] = []

    class Rows(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            named = dict(attrs)
            if tag == "tr" and named.get("data-index"):
                found.append((str(named["data-index"]), named.get("data-shown") == "1"))

    Rows().feed(dom)
    return found


def test_the_all_examples_table_filters_in_a_real_browser(full: dict, openai_session: OpenAISession,
                                                          tmp_path: Path) -> None:
    import re

    page = (openai_session.tmp / "report" / "report.html").resolve()
    rows = [json.loads(line) for line in (openai_session.tmp / "report" / "examples.jsonl").read_text().splitlines()]
    everything = _chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert everything.returncode == 0, everything.stderr[-2000:]
    shown = _rows(everything.stdout)
    assert len(shown) == 8 and all(visible for _, visible in shown)
    # the verdict, read from the rendered page: the first line is the winner line
    winner = re.search(r"<li id=\"winner\">(.*?)</li>", everything.stdout)
    assert winner and winner.group(1) == html.escape(full["verdict"]["lines"][0], quote=False)

    # the fine-tune's answers worse than its baseline: the rows examples.jsonl marks, no others
    expected = {str(r["index"] + 1) for r in rows if r["answers"][FT]["worse_than_baseline"]}
    assert expected
    worse = _chromium(tmp_path, page.as_uri() + "#worse&target=" + quote(FT), "--dump-dom")
    assert {index for index, visible in _rows(worse.stdout) if visible} == expected
    assert f"{len(expected)} of 8 examples shown" in worse.stdout
    # the search box: one question's text
    question = rows[5]["question"]
    searched = _chromium(tmp_path, page.as_uri() + "#q=" + quote(question.lower()), "--dump-dom")
    assert {index for index, visible in _rows(searched.stdout) if visible} == {"6"}
    disagree = {str(r["index"] + 1) for r in rows if r["disagreement"]}
    only = _chromium(tmp_path, page.as_uri() + "#disagree", "--dump-dom")
    assert {index for index, visible in _rows(only.stdout) if visible} == disagree
    shot = tmp_path / "filtered.png"
    taken = _chromium(tmp_path, page.as_uri() + "#worse&target=" + quote(FT), f"--screenshot={shot}",
                      "--window-size=1200,2400")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000


def test_failing_examples_are_counted_and_listed(openai_session: OpenAISession, openai_run: str) -> None:
    before = openai_session.control("/_emulator/state")["chat_requests"]
    # the fine-tuned target is asked first: its first two requests are refused outright (400,
    # not retried), one more meets a transient 503 that the retry rules absorb
    openai_session.control("/_emulator/faults", [
        {"route": "POST /v1/chat/completions$", "status": 400, "times": 2, "message": "injected failure"},
        {"route": "POST /v1/chat/completions$", "status": 503, "times": 1},
    ])
    done = openai_session("compare", openai_run, "--eval", "eval.jsonl", "--baseline", "base", "--no-cache", "--json")
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
@pytest.mark.parametrize(("blocked", "named"), [({"numpy"}, "numpy, scipy, matplotlib"),
                                                ({"scipy"}, "scipy"), ({"matplotlib"}, "matplotlib"),
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
    done = openai_session("compare", openai_run, "--eval", "eval.jsonl", "--report", "private-report", "--no-cache",
                          "--json")
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


def test_compare_after_run_reuses_the_runs_evaluation(openai_session: OpenAISession) -> None:
    from tests.openai.conftest import chat_example

    # questions no earlier test of this module asked, so only the run's evaluation is in the cache
    write_jsonl(openai_session.tmp / "fresh-eval.jsonl", [chat_example(i) for i in range(30, 38)])
    ran = openai_session("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl",
                         "--eval", "fresh-eval.jsonl", "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = last_json(ran)["run_id"]
    before = openai_session.control("/_emulator/state")["chat_requests"]
    done = openai_session("compare", run_id, "--eval", "fresh-eval.jsonl", "--baseline", "base", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = last_json(done)
    targets = {t["label"]: t for t in doc["targets"]}
    # the fine-tune's 8 answers come from the run's evaluation; only the base model is asked
    assert targets[FT]["cached_answers"] == 8 and targets[BASE]["cached_answers"] == 0
    assert openai_session.control("/_emulator/state")["chat_requests"] - before == 8
    assert "8 answers reused" in doc["settings"]["answer_cache"]
    # the same decoding again: now everything is reused, and --no-cache asks afresh
    again = last_json(openai_session("compare", run_id, "--eval", "fresh-eval.jsonl", "--baseline", "base", "--json"))
    assert {t["cached_answers"] for t in again["targets"]} == {8}
    assert openai_session.control("/_emulator/state")["chat_requests"] - before == 8
    fresh = last_json(openai_session("compare", run_id, "--eval", "fresh-eval.jsonl", "--no-cache", "--json"))
    assert "targets" in fresh, fresh
    assert fresh["targets"][0]["cached_answers"] == 0 and fresh["settings"]["answer_cache"].startswith("off")
    assert openai_session.control("/_emulator/state")["chat_requests"] - before == 16
