"""The smaller CLI defects of issue 9, each through the CLI as a subprocess: a closed output pipe,
paths stored absolute, bad config values, unknown provider options."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.core.conftest import CLI


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
