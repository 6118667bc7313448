"""bpe-openai's counts are tiktoken's counts: the fast counter may replace the
reference only because they agree, text for text, on both encodings."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtune.dataset import _bpe_openai, get_tiktoken_encoding, validate_file
from cloudtune.dataset._tokens import make_counter
from cloudtune import catalog

ENCODINGS = ("o200k_base", "cl100k_base")

_BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
           (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F6FF),
           (0x2000, 0x206F), (0x300, 0x36F), (0xFE00, 0xFE0F), (0x1D400, 0x1D4FF)]
_PIECES = [" ", "  ", "\n", "\t", "\r\n", "   \n", "\u00a0", "\u3000", " \n\n ", "'s", "'T", "'LL", "n't", "I'm",
           "'ve", "'re", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_suffix|>", "<|endofprompt|>", "<|",
           "|>", "def f(x):\n    return x**2", '{"a": [1, 2]}', "http://x.y/z?q=1", "a_b-c.d", "...", "!!!",
           "```python", "Müller café naïve", "São Paulo", "東京", "데이터", "$19.99", "3.14159", "e.g.",
           "HTTP/2"]


def _varied_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 60)):
            r = rng.random()
            if r < 0.3:
                parts.append(rng.choice(_PIECES))
            elif r < 0.4:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 14))))
            else:
                low, high = rng.choice(_BLOCKS)
                parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12))))
        texts.append("".join(parts))
    texts += ["", " ", "\n" * 100, " " * 5000, "a" * 50_000, "😀" * 2000, "\u0301" * 1000, "1234567890" * 500,
              "x " * 5000, "\r\n" * 500, "ÀÁÂ" * 2000, "\ufeffabc", "\u200b\u200d\u2060", "a\x00b", "\x7f\x1b[31m",
              "Hello" * 3000, "\t\t  \n  \t" * 300]
    return texts


@pytest.mark.parametrize("encoding_name", ENCODINGS)
def test_bpe_openai_counts_equal_tiktoken_on_a_varied_sample(encoding_name):
    tiktoken_encoding = get_tiktoken_encoding(encoding_name)
    tokenizer = _bpe_openai.get_tokenizer(encoding_name)
    assert tiktoken_encoding is not None and tokenizer is not None
    texts = _varied_texts(3000)
    assert sum(map(len, texts)) > 500_000
    mismatches = [(text[:60], len(tiktoken_encoding.encode_ordinary(text)), tokenizer.count(text))
                  for text in texts if len(tiktoken_encoding.encode_ordinary(text)) != tokenizer.count(text)]
    assert mismatches == []


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
def test_bpe_openai_counts_equal_tiktoken_on_any_text(text):
    for encoding_name in ENCODINGS:
        expected = len(get_tiktoken_encoding(encoding_name).encode_ordinary(text))
        # Through the counter: lone surrogates (which hypothesis generates) are
        # replaced as tiktoken replaces them.
        counter = make_counter(catalog.lookup_model("openai", "gpt-4o-mini" if encoding_name == "o200k_base"
                                                    else "gpt-3.5-turbo-0125"), provider="openai", model=None)
        assert counter.method == f"bpe-openai:{encoding_name}"
        assert counter.count_text(text) == expected


def test_lone_surrogate_counts_as_tiktoken_counts_it():
    counter = make_counter(catalog.lookup_model("openai", "gpt-4o-mini"), provider="openai", model=None)
    text = "caf\udce9 \ud800 ok"
    assert counter.count_text(text) == len(get_tiktoken_encoding("o200k_base").encode_ordinary(text))


def test_a_run_tiktoken_cannot_encode_is_counted():
    # tiktoken's Rust core overflows its stack on ~2 MB of spaces; bpe-openai is linear.
    counter = make_counter(catalog.lookup_model("openai", "gpt-4o-mini"), provider="openai", model=None)
    assert counter.count_text(" " * 2_000_000) == 15_625


def test_report_is_the_same_with_either_counter(write_jsonl, monkeypatch):
    texts = _varied_texts(200, seed=5)
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text or "?"},
                          {"role": "assistant", "content": texts[-1 - i] or "!"}]} for i, text in enumerate(texts)]
    path = write_jsonl(rows)
    for model, encoding_name in (("gpt-4o-mini", "o200k_base"), ("gpt-3.5-turbo-0125", "cl100k_base")):
        monkeypatch.delenv("CLOUDTUNE_TOKEN_COUNTER", raising=False)
        fast = validate_file(path, model=model).to_dict()
        monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", "tiktoken")
        reference = validate_file(path, model=model).to_dict()
        assert fast["token_counts"].pop("tokenizer") == f"bpe-openai:{encoding_name}"
        assert reference["token_counts"].pop("tokenizer") == f"tiktoken:{encoding_name}"
        fast["estimate"].pop("tokenizer")
        reference["estimate"].pop("tokenizer")
        assert fast == reference
        assert fast["token_counts"]["training"]["total"] > 10_000


def test_bpe_openai_loads_without_its_slow_package_import():
    import subprocess
    import sys

    code = ("import sys\nfrom cloudtune.dataset import _bpe_openai\n"
            "t = _bpe_openai.get_tokenizer('o200k_base')\n"
            "print(t.count('hello world'), 'bpe_openai.compat' in sys.modules)\n"
            "import bpe_openai\nprint(bpe_openai.get_encoding('o200k_base').encode('hello world'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "2 False"  # counted without the package's Python layer
    assert second == "[24912, 2375]"  # and the package still imports afterwards, reusing the module


def test_a_tokenizer_panic_is_a_reported_problem_not_a_traceback(write_jsonl, monkeypatch, valid_rows):
    # tiktoken (the fallback counter) panics in Rust on ~2 MB of spaces; pyo3
    # raises that as a BaseException, which must still become a line problem.
    monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", "tiktoken")
    row = {"messages": [{"role": "user", "content": "hi" + " " * 2_000_000 + "there"},
                        {"role": "assistant", "content": "ok"}]}
    report = validate_file(write_jsonl(valid_rows + [row]), model="gpt-4o-mini")
    problem = [p for p in report.problems if p.code == "validator_error"]
    assert [(p.line, p.message) for p in problem] == [(13, "could not count tokens: PanicException")]
    assert report.stats["training"]["examples"] == 13
    monkeypatch.delenv("CLOUDTUNE_TOKEN_COUNTER")
    fast = validate_file(write_jsonl(valid_rows + [row]), model="gpt-4o-mini")  # bpe-openai counts it
    assert "validator_error" not in fast.problem_counts
