"""CLOUDTUNE_HOME is 0700, the ledger (and its -wal/-shm) 0600, and every copy cloudtune makes of
the user's data 0600 - under a permissive umask (0o022), in a CLI subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.core.conftest import CLI, MEMORY, kill9


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _start(cli: CLI, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cloudtune", *args], cwd=cli.tmp, env=cli.base_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=0o022)


def _data_copies(home: Path) -> list[Path]:
    return [p for p in home.rglob("*.jsonl") if p.is_file()]


def test_home_ledger_and_data_copies_are_owner_only_under_umask_022(cli: CLI) -> None:
    os.chmod(cli.tmp / "train.jsonl", 0o600)
    home = cli.tmp / "home"
    process = _start(cli, "run", "--provider", MEMORY, "--model", "base", "--train", "train.jsonl",
                     "--validation-split", "0.25", CLOUDTUNE_MEMORY_HANG="create_job")
    cli.wait_for_hang(process)  # the process is alive, its ledger open: -wal and -shm exist
    try:
        assert _mode(home) == 0o700
        ledger = home / "ledger.sqlite3"
        wal, shm = Path(f"{ledger}-wal"), Path(f"{ledger}-shm")
        assert wal.exists() and shm.exists()
        assert {p.name: _mode(p) for p in (ledger, wal, shm)} == {p.name: 0o600 for p in (ledger, wal, shm)}
        copies = _data_copies(home)
        names = sorted(p.name for p in copies)
        assert len(copies) >= 3, names  # the split's training and validation parts, and the upload copies
        assert {p.name: oct(_mode(p)) for p in copies} == {p.name: oct(0o600) for p in copies}
    finally:
        kill9(process)


def test_an_existing_cloudtune_home_is_tightened_but_not_a_foreign_directory(cli: CLI) -> None:
    home = cli.tmp / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    assert cli.run_memory("--no-deploy", "--no-wait").returncode == 0
    assert _mode(home) == 0o700
    # a directory of the user's that holds other things is theirs: its mode is left alone
    shared = cli.tmp / "project"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    os.chmod(shared, 0o755)
    result = cli("list", CLOUDTUNE_HOME=str(shared))
    assert result.returncode == 0, result.stderr
    assert _mode(shared) == 0o755
    assert _mode(shared / "ledger.sqlite3") == 0o600
