"""Smaller defects an adversary finds in the command line, each through the CLI as a subprocess:
data paths that are not regular files, CLOUDTUNE_HOME that cannot be a home, duplicate YAML keys,
a negative --wait-lock, usage errors under --json, and `resume RUN --provider P CONFIG`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.core.conftest import CLI, MEMORY


def _error_json(result) -> dict:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, (result.returncode, result.stdout, result.stderr)
    return json.loads(lines[-1])["error"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "stdin", "symlink loop", "dangling symlink"])
def test_a_data_path_that_is_not_a_regular_file_says_what_it_is(cli: CLI, kind: str) -> None:
    path = cli.tmp / "data"
    expected = {"directory": "is a directory", "fifo": "named pipe", "stdin": "standard input",
                "symlink loop": "symbolic link loop", "dangling symlink": "which does not exist"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "stdin":
        path = Path("/dev/stdin")
    elif kind == "symlink loop":
        path.symlink_to(path)
    else:
        path.symlink_to(cli.tmp / "gone.jsonl")
    ran = cli("run", "--provider", MEMORY, "--model", "base", "--train", str(path), timeout=30)
    assert ran.returncode == 2, ran.stderr
    assert expected in ran.stderr and str(path) in ran.stderr and "internal error" not in ran.stderr
    checked = cli("validate", str(path), timeout=30)  # a FIFO used to hang here forever
    assert checked.returncode == 2, checked.stderr
    assert expected in checked.stderr
    assert not list((cli.tmp / "home").glob("**/*.jsonl"))  # nothing was copied or uploaded


@pytest.mark.parametrize("where", ["a file", "under a file", "under /proc"])
def test_a_home_that_cannot_be_a_directory_is_exit_2_naming_it(cli: CLI, where: str) -> None:
    blocker = cli.tmp / "plain-file"
    blocker.write_text("not a directory\n")
    home = {"a file": blocker, "under a file": blocker / "home", "under /proc": Path("/proc/cloudtune-test/home")}[where]
    for args in (("list",), ("status", "--offline"), ("list", "--json")):
        result = cli(*args, CLOUDTUNE_HOME=str(home))
        assert result.returncode == 2, (args, result.stderr)
        assert str(home) in result.stderr and "CLOUDTUNE_HOME" in result.stderr
        assert "internal error" not in result.stderr and "RecursionError" not in result.stderr
    assert _error_json(cli("list", "--json", CLOUDTUNE_HOME=str(home)))["exit_code"] == 2


def test_a_key_given_twice_in_the_config_is_refused_naming_it(cli: CLI) -> None:
    config = cli.tmp / "run.yaml"
    config.write_text(f"provider: {MEMORY}\nmodel: base\ntrain: train.jsonl\nhyperparameters:\n  epochs: 1\n"
                      "  epochs: 3\n")
    result = cli("run", str(config))
    assert result.returncode == 2, result.stderr
    assert "'epochs'" in result.stderr and "line 5" in result.stderr and "line 6" in result.stderr
    assert not (cli.tmp / "provider-state.json").exists() or cli.state().get("jobs") in (None, {}, [])


def test_a_negative_wait_lock_is_refused(cli: CLI) -> None:
    for args in (("cleanup", "--wait-lock", "-1"), ("run", "--provider", MEMORY, "--model", "base", "--train",
                                                     "train.jsonl", "--wait-lock=-5s")):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "--wait-lock" in result.stderr


def test_usage_errors_under_json_print_one_json_document(cli: CLI) -> None:
    for args in (("list", "--json", "--no-such-flag"), ("cleanup", "--json", "--wait-lock", "-1"),
                 ("run", "--json", "--method", "nonsense")):
        result = cli(*args)
        assert result.returncode == 2, args
        error = _error_json(result)
        assert error["exit_code"] == 2 and error["message"], args
    plain = cli("list", "--no-such-flag")
    assert plain.returncode == 2 and plain.stdout == ""  # without --json, stdout stays empty


def test_resume_takes_the_config_as_a_positional_argument(cli: CLI) -> None:
    config = cli.tmp / "run.yaml"
    config.write_text(f"provider: {MEMORY}\nmodel: base\ntrain: train.jsonl\n")
    made = cli("run", str(config), "--no-deploy", "--json")
    assert made.returncode == 0, made.stderr
    run_id = json.loads(made.stdout.strip().splitlines()[-1])["run_id"]
    fresh = str(cli.tmp / "fresh-home")  # a machine whose ledger never saw the run: rebuilt from the provider
    resumed = cli("resume", run_id, "--provider", MEMORY, str(config), "--no-deploy", CLOUDTUNE_HOME=fresh)
    assert resumed.returncode == 0, resumed.stderr
    shown = cli("status", run_id, "--provider", MEMORY, str(config), "--json", CLOUDTUNE_HOME=fresh)
    assert shown.returncode == 0, shown.stderr
    twice = cli("resume", run_id, "--provider", MEMORY, str(config), "--config", "other.yaml")
    assert twice.returncode == 2 and "twice" in twice.stderr
