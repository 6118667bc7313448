"""Streaming: peak memory does not grow with the file (10k vs 100k examples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A long system prompt makes each line ~1.3 KB (it repeats, so tokenizing it is
# cached); the numbered question keeps every line distinct so the duplicate
# table really holds every example.
_PARAGRAPH = " ".join(f"word{i % 97}" for i in range(180))

_MEASURE = """
import json, resource, sys
from cloudtune.dataset import validate_file
report = validate_file(sys.argv[1], provider="openai", model="gpt-4o-mini-2024-07-18")
print(json.dumps({"ok": report.ok, "examples": report.stats["training"]["examples"],
                  "processes": report.processes["training"],
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _write(path, n):
    with open(path, "w") as handle:
        for i in range(n):
            row = {"messages": [
                {"role": "system", "content": _PARAGRAPH},
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i % 100}"},
            ]}
            handle.write(json.dumps(row) + "\n")
    return path.stat().st_size


def _peak_rss(path) -> dict:
    # Two range workers wherever the file is large enough (>= 16 MB a range),
    # whatever the cores of the machine running the test.
    env = {**os.environ, "CLOUDTUNE_TOKEN_THREADS": "1", "CLOUDTUNE_VALIDATE_WORKERS": "2"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_flat_10k_vs_100k(tmp_path):
    small_bytes = _write(tmp_path / "10k.jsonl", 10_000)
    big_bytes = _write(tmp_path / "100k.jsonl", 100_000)
    small = _peak_rss(tmp_path / "10k.jsonl")
    big = _peak_rss(tmp_path / "100k.jsonl")
    assert small["ok"] and big["ok"]
    assert (small["examples"], big["examples"]) == (10_000, 100_000)
    growth = (big["rss_kb"] - small["rss_kb"]) * 1024
    file_growth = big_bytes - small_bytes  # ~120 MB more data
    # What may grow: the duplicate/leakage fingerprint table (12 bytes a slot,
    # ~50 bytes an example while it doubles); nothing proportional to the data.
    assert growth < 100_000 * 64, (small, big)
    assert growth < file_growth / 20, (growth, file_growth)
    # The 100k file is validated by two processes (the 10k file, 13 MB, in one
    # pass): the forked worker starts as a copy of the parent and holds only its
    # range's state, so it stays within the same bound.
    assert (small["processes"], big["processes"]) == (1, 2)
    worker_growth = (big["worker_rss_kb"] - small["rss_kb"]) * 1024
    assert worker_growth < 100_000 * 64, (small, big)


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
