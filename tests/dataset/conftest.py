from __future__ import annotations

import json
from pathlib import Path

import pytest


def chat_example(i: int = 0, *, system: bool = True, turns: int = 1) -> dict:
    messages = [{"role": "system", "content": "You are a helpful assistant."}] if system else []
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {i}.{t}: what is {i} + {t}?"})
        messages.append({"role": "assistant", "content": f"The answer is {i + t}."})
    return {"messages": messages}


def dpo_row(i: int = 0) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": f"Say hi to {i}"}]},
        "preferred_output": [{"role": "assistant", "content": f"Hi {i}!"}],
        "non_preferred_output": [{"role": "assistant", "content": f"Go away {i}."}],
    }


@pytest.fixture
def write_jsonl(tmp_path: Path):
    """write_jsonl(rows, name=..., raw=...) -> Path. ``rows`` may hold dicts (dumped)
    or str/bytes lines written as they are."""

    def write(rows, name: str = "train.jsonl", *, newline: bytes = b"\n", prefix: bytes = b"") -> Path:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.write(prefix)
            for row in rows:
                if isinstance(row, bytes):
                    data = row
                elif isinstance(row, str):
                    data = row.encode("utf-8")
                else:
                    data = json.dumps(row).encode("utf-8")
                handle.write(data + newline)
        return path

    return write


@pytest.fixture
def valid_rows():
    return [chat_example(i) for i in range(12)]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    # Token tables are seeded under CLOUDTUNE_HOME; share one per session so
    # tests do not each rewrite 5 MB.
    home = tmp_path_factory.getbasetemp() / "cloudtune-home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))


def codes(report, severity: str | None = None, file: str | None = None) -> set[str]:
    return {p.code for p in report.problems
            if (severity is None or p.severity == severity) and (file is None or p.file == file)}


def problem(report, code: str):
    found = [p for p in report.problems if p.code == code]
    assert found, f"no {code} in {[str(p) for p in report.problems]}"
    return found[0]
