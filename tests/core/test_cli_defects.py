"""The smaller CLI defects of issue 9, each through the CLI as a subprocess: a closed output pipe,
paths stored absolute, bad config values, unknown provider options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.core.conftest import CLI, MEMORY, kill9
from tests.support.cli_zygote import run_cloudtune


def _with_closed_stdout(cli: CLI, *args: str) -> tuple[int, str]:
    """Run a command whose stdout reader is gone before the first write (`cloudtune list | true`)."""
    process = subprocess.Popen([sys.executable, "-m", "cloudtune", *args], cwd=cli.tmp, env=cli.base_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # type: ignore[union-attr]
    stderr = process.stderr.read()  # type: ignore[union-attr]
    return process.wait(timeout=60), stderr


def test_a_closed_output_pipe_ends_the_command_quietly(cli: CLI) -> None:
    assert cli.run_memory("--no-deploy").returncode == 0
    for args in (("list",), ("list", "--json"), ("status", "--offline")):
        code, stderr = _with_closed_stdout(cli, *args)
        assert stderr == "", (args, stderr)
        assert code == 141, args  # 128 + SIGPIPE, as a shell reports a program stopped by a closed pipe
    assert cli("list").stdout.count("\n") == 1  # the same command with a reader still prints its line


# ------------------------------------------------------------------ paths stored absolute
def test_relative_paths_are_stored_absolute_so_resume_works_from_another_directory(cli: CLI) -> None:
    (cli.tmp / "data").mkdir()
    (cli.tmp / "train.jsonl").rename(cli.tmp / "data" / "train.jsonl")
    lines = (cli.tmp / "data" / "train.jsonl").read_text().splitlines(keepends=True)
    (cli.tmp / "data" / "valid.jsonl").write_text("".join(lines[:4]))
    (cli.tmp / "data" / "eval.jsonl").write_text("".join(lines[4:8]))
    started = cli("run", "--provider", MEMORY, "--model", "base", "--train", "data/train.jsonl",
                  "--validation", "./data/valid.jsonl", "--eval", "data/../data/eval.jsonl", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    elsewhere = cli.tmp / "elsewhere"
    elsewhere.mkdir()
    resumed = run_cloudtune(["resume", run_id, "--json"], elsewhere, cli.base_env(), 120)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["evaluation"]["examples"] == 4  # the eval file was found from another directory


def test_yaml_paths_are_relative_to_the_yaml_file_and_stored_absolute(cli: CLI) -> None:
    (cli.tmp / "configs").mkdir()
    (cli.tmp / "eval.jsonl").write_text("".join((cli.tmp / "train.jsonl").read_text().splitlines(keepends=True)[:3]))
    (cli.tmp / "configs" / "run.yaml").write_text(
        f"provider: {MEMORY}\nmodel: base\ntrain: ../train.jsonl\neval: ../eval.jsonl\n"
    )
    started = cli("run", "configs/run.yaml", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    resumed = run_cloudtune(["resume", run_id, "--json"], cli.tmp / "configs", cli.base_env(), 120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluation"]["examples"] == 3


def test_a_resume_that_needs_the_training_file_finds_it_from_another_directory(cli: CLI) -> None:
    process = cli.start_memory(CLOUDTUNE_MEMORY_HANG="upload_file")  # uploaded, the answer never arrives
    cli.wait_for_hang(process)
    kill9(process)
    elsewhere = cli.tmp / "elsewhere"
    elsewhere.mkdir()
    resumed = run_cloudtune(["resume", "--json", "--cleanup", "always"], elsewhere, cli.base_env(), 120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"


# ------------------------------------------------------------------ bad config values
BAD_CONFIGS = {
    # file contents -> what the message must name (the field as written, and the file)
    "train_not_a_path.yaml": (b"model: base\ntrain: 123\n", "train"),
    "epochs_not_a_number.yaml": (b"model: base\ntrain: train.jsonl\nhyperparameters:\n  epochs: many\n", "epochs"),
    "model_a_list.yaml": (b"model: [base]\ntrain: train.jsonl\n", "model"),
    "metadata_not_text.yaml": (b"model: base\ntrain: train.jsonl\nmetadata:\n  team: [a, b]\n", "metadata.team"),
    "timeout_unreadable.yaml": (b"model: base\ntrain: train.jsonl\ntimeout: soon\n", "timeout"),
    "latin1.yaml": (b"model: base\ntrain: train.jsonl\nsuffix: caf\xe9\n", "line 4"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_bad_config_value_exits_2_naming_the_field_and_the_file(cli: CLI, name: str) -> None:
    content, field = BAD_CONFIGS[name]
    (cli.tmp / name).write_bytes(f"provider: {MEMORY}\n".encode() + content)
    result = cli("run", name)
    assert result.returncode == 2, result.stderr
    assert "internal error" not in result.stderr
    assert field in result.stderr and name in result.stderr, result.stderr
    assert "resume" not in result.stderr + result.stdout  # no run was created, so there is none to resume
    assert cli("list").stdout.strip() == "no runs yet"


def test_a_bad_flag_value_names_the_flag(cli: CLI) -> None:
    result = cli.run_memory("--epochs", "0")
    assert result.returncode == 2
    assert "--epochs" in result.stderr and "internal error" not in result.stderr
    assert "resume" not in result.stderr


# ------------------------------------------------------------------ provider options
def test_an_unknown_provider_option_exits_2_naming_the_known_ones(cli: CLI) -> None:
    result = cli.run_memory("-o", "lora_rnak=8", "-o", "steps=2")
    assert result.returncode == 2, result.stderr
    assert "lora_rnak" in result.stderr
    for known in ("state_file", "steps", "fail"):
        assert known in result.stderr
    assert cli("list").stdout.strip() == "no runs yet"  # refused before a run was recorded
    assert not cli.state_file.exists()  # and before the provider was called


def test_a_known_provider_option_is_used(cli: CLI) -> None:
    result = cli.run_memory("-o", "steps=2", "--no-deploy", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"


def test_delete_model_refuses_an_unknown_option_too(cli: CLI) -> None:
    result = cli("delete-model", "ft:x", "--provider", MEMORY, "-o", "stat_file=x")
    assert result.returncode == 2
    assert "stat_file" in result.stderr and "state_file" in result.stderr  # the close match is offered


def test_an_error_reported_to_a_closed_pipe_ends_quietly_too(cli: CLI) -> None:
    code, stderr = _with_closed_stdout(cli, "status", "no-such-run", "--offline", "--json")  # error as JSON on stdout
    assert stderr.startswith("cloudtune: error:") and "BrokenPipe" not in stderr and "Traceback" not in stderr
    assert code == 2  # the error's own exit code: stderr still told the user
