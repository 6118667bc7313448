"""Cold start of ``cloudtune --help`` and ``cloudtune status`` beside ``python -c "import openai"``,
measured in the same run (median of N fresh processes each). Goal: <= 0.25 s, and no SDK,
torch or azure module imported before a command needs it.

    python benchmarks/cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "openai", "azure", "peft", "bitsandbytes")


def median_seconds(argv: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def heavy_modules(command: str, env: dict[str, str]) -> list[str]:
    code = (
        "import sys, runpy; sys.argv=['cloudtune'," + ",".join(repr(a) for a in command.split()) + "]\n"
        "try:\n    runpy.run_module('cloudtune', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    marker = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")][-1]
    return [m for m in marker[len("HEAVY="):].split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="cloudtune-bench-")
    env = {**os.environ, "CLOUDTUNE_HOME": home, "PYTHONPATH": str(ROOT)}
    py = sys.executable
    rows = [
        ("python -c pass (interpreter floor)", [py, "-c", "pass"]),
        ("cloudtune --help", [py, "-m", "cloudtune", "--help"]),
        ("cloudtune status (no runs)", [py, "-m", "cloudtune", "status", "--offline"]),
        ('python -c "import openai" (reference)', [py, "-c", "import openai"]),
    ]
    results = {label: median_seconds(argv, args.runs, env) for label, argv in rows}
    reference = results['python -c "import openai" (reference)']
    print(f"median of {args.runs} cold starts each, same machine, same run\n")
    print(f"{'command':<40} {'seconds':>8} {'vs import openai':>17}")
    for label, seconds in results.items():
        print(f"{label:<40} {seconds:8.3f} {seconds / reference:16.2f}x")
    goal = 0.25
    for label in ("cloudtune --help", "cloudtune status (no runs)"):
        verdict = "meets" if results[label] <= goal else "MISSES"
        print(f"{label}: {results[label]:.3f}s {verdict} the {goal}s goal")
    for command in ("--help", "status --offline"):
        loaded = heavy_modules(command, env)
        print(f"heavy modules imported by `cloudtune {command}`: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
