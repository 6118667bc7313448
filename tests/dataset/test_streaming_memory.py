"""Streaming: peak memory does not grow with the file (10k vs 100k examples)."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from cloudtune.dataset import validate_file

# A few long, repeated paragraphs make each line ~1.5 KB; a counter keeps every
# line distinct so the duplicate table really holds 100k entries.
_PARAGRAPH = " ".join(f"word{i % 97}" for i in range(150))


def _write(path, n):
    with open(path, "w") as handle:
        for i in range(n):
            row = {"messages": [
                {"role": "system", "content": _PARAGRAPH},
                {"role": "user", "content": f"question {i} {_PARAGRAPH[: 200 + i % 50]}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]}
            handle.write(json.dumps(row) + "\n")
    return path.stat().st_size


def _peak(path) -> tuple[int, object]:
    tracemalloc.start()
    try:
        report = validate_file(path, provider="openai", model="gpt-4o-mini-2024-07-18")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, report


@pytest.mark.slow
def test_memory_flat_10k_vs_100k(tmp_path):
    small_bytes = _write(tmp_path / "10k.jsonl", 10_000)
    big_bytes = _write(tmp_path / "100k.jsonl", 100_000)
    _write(tmp_path / "warm.jsonl", 50)
    validate_file(tmp_path / "warm.jsonl", model="gpt-4o-mini-2024-07-18")  # tokenizer tables loaded
    small_peak, small = _peak(tmp_path / "10k.jsonl")
    big_peak, big = _peak(tmp_path / "100k.jsonl")
    assert small.ok and big.ok
    assert big.stats["training"]["examples"] == 100_000
    growth = big_peak - small_peak
    file_growth = big_bytes - small_bytes
    # What may grow: the duplicate/leakage fingerprint table (16 bytes a slot,
    # at most 2 slots an example, both tables alive while it doubles).
    assert growth < 100_000 * 64, (small_peak, big_peak)
    assert growth < file_growth / 20, (growth, file_growth)


def test_fingerprint_table_keeps_every_entry_across_growth():
    from cloudtune.dataset._fingerprints import FingerprintTable

    table = FingerprintTable(capacity=4)
    values = [hash(("x", i)) for i in range(5000)] + [0, -1, 2**64 - 1]
    for line, value in enumerate(values, start=1):
        assert table.add(value, line) is None or value in (-1, 2**64 - 1)
    assert len(table) >= 5001
    for line, value in enumerate(values[:5000], start=1):
        assert table.get(value) == line
        assert table.add(value, 99_999) == line
    assert table.get(hash("never added")) is None
