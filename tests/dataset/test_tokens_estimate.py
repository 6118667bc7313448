"""Token counts (offline tiktoken, HF tokenizers, labelled estimates), statistics, epochs, cost."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune import catalog
from cloudtune.dataset import auto_epochs, get_tiktoken_encoding, validate_file
from cloudtune.dataset import _tiktoken_offline
from cloudtune.dataset._stats import Histogram

from .conftest import chat_example

ROOT = Path(__file__).resolve().parents[2]


def test_tiktoken_is_seeded_offline_in_a_fresh_process(tmp_path):
    """A fresh interpreter, no tiktoken cache, every network route closed: the
    tables come from bpe-openai, land under CLOUDTUNE_HOME with tiktoken's
    cache names and verified hashes, and counts are right."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(CLOUDTUNE_HOME=str(home), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", NO_PROXY="", TMPDIR=str(tmp_path))
    code = (
        "import os, sys\n"
        "import requests\n"
        "def refuse(*a, **k): raise SystemExit('tiktoken tried to download')\n"
        "requests.get = refuse\n"
        "from cloudtune.dataset import get_tiktoken_encoding\n"
        "o = get_tiktoken_encoding('o200k_base'); c = get_tiktoken_encoding('cl100k_base')\n"
        "print(len(o.encode_ordinary('hello world')), len(c.encode_ordinary('hello world')))\n"
        "print('TIKTOKEN_CACHE_DIR' in os.environ)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2", "False"]  # and the process environment was left as it was
    cache = home / "cache" / "tiktoken"
    for name, (url, sha) in _tiktoken_offline.ENCODING_BLOBS.items():
        cached = cache / hashlib.sha1(url.encode()).hexdigest()
        assert cached.is_file(), name
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha


def test_expected_hashes_match_tiktoken_own_table():
    from tiktoken_ext import openai_public

    source = Path(openai_public.__file__).read_text()
    for url, sha in _tiktoken_offline.ENCODING_BLOBS.values():
        assert url in source and sha in source


def test_corrupt_cache_is_replaced_from_the_wheel(tmp_path):
    url, sha = _tiktoken_offline.ENCODING_BLOBS["cl100k_base"]
    target = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    target.write_bytes(b"garbage")
    assert _tiktoken_offline.seed_cache("cl100k_base", tmp_path) == tmp_path
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha


def test_unknown_encoding_cannot_be_seeded(tmp_path):
    with pytest.raises(LookupError):
        _tiktoken_offline.seed_cache("p50k_base", tmp_path)
    assert get_tiktoken_encoding("p50k_base") is None  # never falls through to a download


@pytest.mark.parametrize("backend", ["bpe-openai", "tiktoken"])
def test_counts_follow_the_cookbook_formula(write_jsonl, monkeypatch, backend):
    monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", backend)
    enc = get_tiktoken_encoding("o200k_base")
    rows = [chat_example(i) for i in range(12)]
    report = validate_file(write_jsonl(rows), model="gpt-4o-mini-2024-07-18")
    expected_total = expected_assistant = 0
    for row in rows:
        n = 3
        for m in row["messages"]:
            n += 3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
            if m["role"] == "assistant":
                expected_assistant += len(enc.encode(m["content"]))
        expected_total += n
    assert report.token_counts["tokenizer"] == f"{backend}:o200k_base" and report.token_counts["exact"]
    assert report.token_counts["training"] == {"total": expected_total, "assistant": expected_assistant}


@pytest.mark.parametrize("backend", ["bpe-openai", "tiktoken"])
def test_gpt35_uses_cl100k(write_jsonl, valid_rows, monkeypatch, backend):
    monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", backend)
    report = validate_file(write_jsonl(valid_rows), model="gpt-3.5-turbo-0125")
    assert report.token_counts["tokenizer"] == f"{backend}:cl100k_base"
    assert report.token_counts["context_tokens"] == 16_385


@pytest.mark.parametrize("provider, model", [("azure", "Phi-4-mini-instruct"), ("local", "SmolLM2-135M-Instruct"),
                                             ("openai", None)])
def test_no_tokenizer_means_a_labelled_estimate(write_jsonl, valid_rows, provider, model):
    report = validate_file(write_jsonl(valid_rows), provider=provider, model=model)
    assert report.token_counts["exact"] is False
    assert report.token_counts["tokenizer"].startswith("estimate:")
    assert "ESTIMATE" in report.token_counts["note"]
    assert report.estimate.tokens_exact is False
    assert "estimate" in report.render().lower()


def test_hf_tokenizer_with_chat_template(tmp_path, write_jsonl, valid_rows):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    for word in "you are a helpful assistant question what is the answer".split():
        vocab.setdefault(word, len(vocab))
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    directory = tmp_path / "tiny-tokenizer"
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    template = "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "[UNK]", "chat_template": template}))
    report = validate_file(write_jsonl(valid_rows), provider="local", model="SmolLM2-135M-Instruct",
                           tokenizer_path=directory)
    assert report.token_counts["exact"] is True
    assert report.token_counts["tokenizer"] == "huggingface:tiny-tokenizer"
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(directory))

    def n_tokens(messages):
        ids = hf.apply_chat_template(messages, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    expected = sum(n_tokens(r["messages"]) for r in valid_rows)
    assert expected > 12 * 10
    assert report.token_counts["training"]["total"] == expected


def test_broken_hf_tokenizer_dir_falls_back_to_estimate(tmp_path, write_jsonl, valid_rows):
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "tokenizer.json").write_text("{not json")
    report = validate_file(write_jsonl(valid_rows), provider="local", tokenizer_path=directory)
    assert report.token_counts["exact"] is False
    assert "could not load the tokenizer" in report.token_counts["note"]


# ------------------------------------------------------------ statistics

@pytest.mark.parametrize("values", [[5], [1, 2], [3, 1, 2, 10, 7, 7, 7, 100], list(range(1000)) + [5] * 50])
def test_histogram_percentiles_match_numpy(values):
    np = pytest.importorskip("numpy")
    h = Histogram()
    for v in values:
        h.add(v)
    got = h.percentiles((0, 5, 50, 95, 100))
    want = [float(np.percentile(values, q)) for q in (0, 5, 50, 95, 100)]
    assert got == pytest.approx(want)
    s = h.summary()
    assert (s["min"], s["max"], s["total"], s["count"]) == (min(values), max(values), sum(values), len(values))


def test_stats_in_report(write_jsonl):
    rows = [chat_example(i, turns=1 + i % 3) for i in range(20)]
    report = validate_file(write_jsonl(rows), model="gpt-4o-mini")
    s = report.stats["training"]
    assert s["roles"] == {"assistant": 39, "system": 20, "user": 39}  # 7x1 + 7x2 + 6x3 turns
    assert s["messages_per_example"]["min"] == 3 and s["messages_per_example"]["max"] == 7
    assert s["messages_per_example"]["p50"] == 5
    t = s["tokens_per_example"]
    assert t["min"] <= t["p5"] <= t["p50"] <= t["p95"] <= t["max"]
    assert t["total"] == report.token_counts["training"]["total"]


# ------------------------------------------------------------ epochs and cost

@pytest.mark.parametrize("n, epochs", [(1, 25), (3, 25), (10, 10), (20, 5), (33, 3), (34, 3), (100, 3), (8333, 3),
                                       (8334, 2), (12_500, 2), (12_501, 1), (100_000, 1)])
def test_auto_epochs_rule(n, epochs):
    assert auto_epochs(n) == epochs


def test_estimate_billed_tokens_and_cost(write_jsonl):
    rows = [chat_example(i) for i in range(20)]
    report = validate_file(write_jsonl(rows), model="gpt-4o-mini-2024-07-18")
    est = report.estimate
    assert est.epochs == 5 and est.epochs_source.startswith("auto")
    assert est.billed_tokens == report.token_counts["training"]["total"] * 5
    info = catalog.lookup_model("openai", "gpt-4o-mini-2024-07-18")
    assert est.price_per_1m_training_tokens == info.price_per_1m_training_tokens
    assert est.cost_usd == pytest.approx(est.billed_tokens / 1e6 * info.price_per_1m_training_tokens, abs=1e-4)
    assert est.price_date == info.price_date and est.price_source == info.price_source
    assert est.label == "ESTIMATE"
    text = est.describe()
    assert "ESTIMATE" in text and info.price_date in text


def test_price_override_and_given_epochs(write_jsonl, valid_rows):
    path = write_jsonl(valid_rows)
    report = validate_file(path, model="gpt-4o-mini", prices={"gpt-4o-mini-2024-07-18": 10.0}, epochs=2)
    est = report.estimate
    assert est.epochs == 2 and est.epochs_source == "given"
    assert est.price_per_1m_training_tokens == 10.0 and est.price_date == "override"
    assert est.cost_usd == pytest.approx(est.billed_tokens / 1e6 * 10.0, abs=1e-4)
    phi = validate_file(path, provider="azure", model="Phi-4", prices={"Phi-4": 2.5})
    assert phi.estimate.cost_usd is not None
    assert validate_file(path, provider="azure", model="Phi-4").estimate.cost_usd is None


def test_report_to_dict_is_json(write_jsonl, valid_rows):
    report = validate_file(write_jsonl(valid_rows + ["{bad"]), model="gpt-4o-mini")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["problem_counts"] == {"invalid_json": 1}
    assert data["estimate"]["label"] == "ESTIMATE"
    assert data["problems"][0]["line"] == 13 and data["problems"][0]["path"] == "$"


def test_render_plain_and_rich(write_jsonl, valid_rows):
    report = validate_file(write_jsonl(valid_rows + ["{bad"]), model="gpt-4o-mini")
    plain = report.render(color=False)
    assert plain.startswith("NOT USABLE") and "line 13" in plain and "\x1b[" not in plain
    assert str(report) == plain
    colored = report.render(color=True)
    assert "\x1b[" in colored and "invalid_json" in colored


def test_threaded_counting_gives_the_same_report(write_jsonl, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", "tiktoken")  # threads only serve tiktoken (it releases the GIL)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = []
    for i in range(600):
        text = " ".join(words[(i * 7 + j) % len(words)] + str(j % 13) for j in range(60 + i % 40))
        rows.append({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text},
                                  {"role": "assistant", "content": text[::-1]}]})
    path = write_jsonl(rows)
    single = validate_file(path, model="gpt-4o-mini", token_threads=1)
    threaded = validate_file(path, model="gpt-4o-mini", token_threads=4)
    assert single.to_dict() == threaded.to_dict()
    assert single.stats["training"]["tokens_per_example"]["count"] == 600


def test_render_puts_errors_first_and_caps_each_code(write_jsonl):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(30)] + ["{broken"]
    text = validate_file(write_jsonl(rows)).render(color=False)
    body = text.splitlines()
    assert "invalid_json" in body[2]  # the one error comes before 30 warnings
    assert sum("missing_system_message" in line and "warning" in line for line in body) == 5
    assert "more (counts per code below" in text and "missing_system_message=30" in text
