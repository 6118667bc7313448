"""split_file and the `validate` command (in-process and as a subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune.dataset import split_file, validate_file
from cloudtune.dataset import command
from cloudtune.errors import ConfigError, DatasetError

from .conftest import chat_example

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------ split

def test_split_is_deterministic_and_complete(write_jsonl, tmp_path):
    rows = [chat_example(i) for i in range(100)]
    source = write_jsonl(rows)
    train, valid = split_file(source, 0.1, seed=42, out_dir=tmp_path / "a")
    again = split_file(source, 0.1, seed=42, out_dir=tmp_path / "b")
    assert train.read_bytes() == again[0].read_bytes() and valid.read_bytes() == again[1].read_bytes()
    train_lines, valid_lines = train.read_bytes().splitlines(), valid.read_bytes().splitlines()
    assert len(valid_lines) == 10 and len(train_lines) == 90
    assert sorted(train_lines + valid_lines) == sorted(source.read_bytes().splitlines())
    other = split_file(source, 0.1, seed=7, out_dir=tmp_path / "c")
    assert other[1].read_bytes() != valid.read_bytes()
    # order within each file is the source order
    original = source.read_bytes().splitlines()
    assert train_lines == [line for line in original if line in set(train_lines)]
    report = validate_file(train, validation_path=valid)
    assert report.ok and "validation_leak" not in report.problem_counts


def test_split_keeps_at_least_one_on_each_side(write_jsonl, tmp_path):
    source = write_jsonl([chat_example(i) for i in range(3)])
    train, valid = split_file(source, 0.01, seed=1, out_dir=tmp_path)
    assert len(valid.read_bytes().splitlines()) == 1 and len(train.read_bytes().splitlines()) == 2
    train, valid = split_file(source, 0.99, seed=1, out_dir=tmp_path)
    assert len(train.read_bytes().splitlines()) == 1


def test_split_keeps_bom_and_skips_blank_lines(write_jsonl, tmp_path):
    source = write_jsonl([chat_example(i) for i in range(10)] + [""], prefix=b"\xef\xbb\xbf", newline=b"\r\n")
    train, valid = split_file(source, 0.2, seed=0, out_dir=tmp_path / "out")
    assert train.read_bytes().startswith(b"\xef\xbb\xbf") and valid.read_bytes().startswith(b"\xef\xbb\xbf")
    assert validate_file(train, provider="azure", validation_path=valid).stats["validation"]["examples"] == 2


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5, "0.1", True])
def test_split_rejects_bad_fraction(write_jsonl, tmp_path, fraction):
    with pytest.raises(ConfigError):
        split_file(write_jsonl([chat_example()]), fraction, seed=0, out_dir=tmp_path)


def test_split_needs_two_examples(write_jsonl, tmp_path):
    with pytest.raises(DatasetError):
        split_file(write_jsonl([chat_example()]), 0.5, seed=0, out_dir=tmp_path)
    with pytest.raises(DatasetError):
        split_file(tmp_path / "missing.jsonl", 0.5, seed=0, out_dir=tmp_path)


# ------------------------------------------------------------ command

def _parse(argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_command_usable_exit_0(write_jsonl, valid_rows, capsys):
    path = write_jsonl(valid_rows)
    assert command.run(_parse([str(path), "--model", "gpt-4o-mini"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("USABLE") and "ESTIMATE" in out and "\x1b[" not in out


def test_command_not_usable_exit_2_json(write_jsonl, valid_rows, capsys):
    path = write_jsonl(valid_rows + ['{"messages": [{"role": "user", "content": "<|endoftext|>"}]}'])
    valid = write_jsonl(valid_rows[:2], "valid.jsonl")
    code = command.run(_parse([str(path), "--validation", str(valid), "--provider", "openai", "--json"]))
    assert code == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert {"special_token", "example_missing_assistant_message", "validation_leak"} <= set(data["problem_counts"])
    special = [p for p in data["problems"] if p["code"] == "special_token"][0]
    assert special["line"] == 13 and special["path"] == "messages[0].content"


def test_command_dpo_and_local(write_jsonl, capsys):
    from .conftest import dpo_row

    path = write_jsonl([dpo_row(i) for i in range(3)])
    assert command.run(_parse([str(path), "--method", "dpo", "--provider", "local"])) == 0
    assert command.run(_parse([str(path), "--method", "dpo", "--provider", "openai"])) == 2  # fewer than 10
    capsys.readouterr()


def test_command_as_subprocess(write_jsonl, valid_rows, tmp_path):
    good = write_jsonl(valid_rows)
    bad = write_jsonl([b"\x00\x01binary"], "bad.jsonl")
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / "home")}
    for path, expected in ((good, 0), (bad, 2), (tmp_path / "missing.jsonl", 2)):
        done = subprocess.run([sys.executable, "-m", "cloudtune.dataset.command", str(path), "--model",
                               "gpt-4o-mini-2024-07-18"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == expected, done.stderr
        assert "Traceback" not in done.stderr
        assert ("USABLE" if expected == 0 else "NOT USABLE") in done.stdout
