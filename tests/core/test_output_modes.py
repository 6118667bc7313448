"""The live view on a terminal, plain lines when not a terminal, and `providers`."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.core.conftest import CLI, MEMORY


def test_terminal_gets_the_live_view_with_losses_and_events(cli: CLI) -> None:
    env = cli.base_env(CLOUDTUNE_POLL_INTERVAL="0.05")
    env.pop("CI")
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudtune", "run", "--provider", MEMORY, "--model", "base", "--train", "train.jsonl"],
        cwd=cli.tmp, env={**env, "COLUMNS": "100", "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert process.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "cloudtune run" in screen and "train loss" in screen and "ETA" in screen
    assert "Step 3/3" in screen and "succeeded" in screen


def test_plain_lines_when_not_a_terminal(cli: CLI) -> None:
    result = cli.run_memory()
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr  # no escape codes in CI logs
    assert "Step 1/3" in result.stderr and "train_loss=" in result.stderr
    assert result.stdout.startswith("run ") and "succeeded" in result.stdout


def test_providers_reports_each_builtin_without_crashing(cli: CLI) -> None:
    result = cli("providers", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["provider"]: row for row in json.loads(result.stdout)["providers"]}
    assert {"openai", "azure", "local"} <= rows.keys()
    for row in rows.values():
        assert "sdk_installed" in row and "ok" in row
