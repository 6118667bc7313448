"""State backends side by side: SQLite (the reference, measured in the same run), PostgreSQL and
Azure Blob (Azurite), each holding the same number of runs (1,000 by default), on loopback.

For each backend: ``cloudtune status RUN --offline`` and ``cloudtune list`` (the default 20 runs,
and all of them with ``--limit``) as commands per second, each command run in-process exactly as
the CLI runs it (the state opened, used and closed per command; the interpreter's own start-up,
the same for every backend, is left out); and a run lock's acquire + release latency (median and
95th percentile). The issue's bound: ``list`` of every run under a second on each backend.

    python benchmarks/state_backends.py [--runs 1000] [--commands 20] [--locks 50]

PostgreSQL and Azurite are started on free loopback ports as the tests start them
(tests/support/state_servers.py); ``scripts/setup.sh`` installs both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill(url: str, runs: int) -> str:
    """``runs`` runs in the state at ``url``; returns one run id to ask ``status`` about."""
    from cloudtune.state import connect_state
    from cloudtune.types import FineTuneSpec, Step

    store = connect_state(url)
    spec = FineTuneSpec(provider="openai", base_model="gpt-4o-mini-2024-07-18", training_file="train.jsonl")
    middle = ""
    for n in range(runs):
        run = store.create_run(spec, run_id=f"20261101-{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}-{n:06x}")
        run.job_id, run.step, run.status = f"ftjob-{n}", Step.JOB_FINISHED, "succeeded"
        run.fine_tuned_model = f"ft:gpt-4o-mini-2024-07-18:org::{n}"
        store.intent(run.run_id, "create_job", attempt=1)
        store.save(run)
        if n == runs // 2:
            middle = run.run_id
    store.close()
    return middle


def commands_per_second(url: str, argv: list[str], count: int) -> float:
    from cloudtune import cli

    os.environ["CLOUDTUNE_STATE"] = url
    started = time.perf_counter()
    for _ in range(count):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = cli.main(argv)
        if code != 0 or not out.getvalue():
            raise SystemExit(f"`cloudtune {' '.join(argv)}` failed on {url}: exit {code}")
    return count / (time.perf_counter() - started)


def lock_latency_ms(url: str, run_id: str, count: int) -> tuple[float, float]:
    from cloudtune.state import connect_state

    store = connect_state(url)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        store.acquire(run_id)
        store.release(run_id)
        samples.append((time.perf_counter() - started) * 1000)
    store.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=20, help="commands timed per figure")
    parser.add_argument("--locks", type=int, default=50, help="lock acquire/release pairs timed")
    args = parser.parse_args()
    from tests.support.state_servers import AzuriteServer, PostgresServer

    home = tempfile.mkdtemp(prefix="cloudtune-bench-state-")
    os.environ["CLOUDTUNE_HOME"] = home
    postgres, azurite = PostgresServer().start(), AzuriteServer().start()
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    backends = {
        "sqlite (reference)": f"sqlite:///{home}/ledger.sqlite3",
        "postgresql": postgres.new_database(),
        "azblob (Azurite)": azurite.new_url(),
    }
    print(f"{args.runs} runs per backend; {args.commands} commands per figure, in-process; "
          f"{args.locks} lock acquire+release pairs")
    print(f"{'backend':<20} {'fill s':>7} {'status/s':>9} {'list/s':>8} {'list-all/s':>10} {'list-all s':>10} "
          f"{'lock ms p50':>11} {'p95':>6}")
    try:
        for name, url in backends.items():
            started = time.perf_counter()
            run_id = fill(url, args.runs)
            filled = time.perf_counter() - started
            status = commands_per_second(url, ["status", run_id, "--offline", "--json"], args.commands)
            listed = commands_per_second(url, ["list", "--json"], args.commands)
            listed_all = commands_per_second(url, ["list", "--json", "--limit", str(args.runs)],
                                             max(3, args.commands // 4))
            p50, p95 = lock_latency_ms(url, run_id, args.locks)
            print(f"{name:<20} {filled:7.1f} {status:9.1f} {listed:8.1f} {listed_all:10.2f} {1 / listed_all:10.3f} "
                  f"{p50:11.2f} {p95:6.2f}", flush=True)
    finally:
        postgres.stop()
        azurite.stop()
    print("goal: list of every run under 1 s on each backend (list-all s)")


if __name__ == "__main__":
    main()
