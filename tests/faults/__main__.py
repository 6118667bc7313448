"""``python -m tests.faults [-k TEXT] [--list]``: run the fault matrix and print one row per
(scenario, target) with pass/fail and the reason, then the counts. Exit 0 only if every
selected row passed. Rows on the Azure emulator run beside the others (two lanes)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("-k", dest="select", action="append", default=[],
                        help="run only rows whose id contains this text (repeatable: any of them)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)

    from tests.faults.matrix import Bystanders, Scenario, all_scenarios, run_rows
    from tests.faults.targets import Targets

    rows = [row for row in all_scenarios() if not args.select or any(s in row.id for s in args.select)]
    if args.list:
        for row in rows:
            print(f"{row.name:<52} {row.target:<17} issue 9 {row.issue}")
        print(f"{len(rows)} rows")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="cloudtune-faults-"))
    targets = Targets(workdir)
    printing = threading.Lock()
    started = time.monotonic()

    def progress(row: Scenario, passed: bool, reason: str) -> None:
        with printing:
            print(f"  [{time.monotonic() - started:5.0f}s] {row.id}: {'pass' if passed else 'FAIL'}",
                  file=sys.stderr, flush=True)

    try:
        results = run_rows(targets, Bystanders(targets, workdir), rows, workdir, progress)
    finally:
        targets.close()
    print(f"{'scenario':<52} {'target':<17} {'result':<6} reason")
    for row in rows:
        passed, reason = results[row.id]
        print(f"{row.name:<52} {row.target:<17} {'pass' if passed else 'FAIL':<6} {reason}")
    passed_count = sum(1 for passed, _ in results.values() if passed)
    print(f"\n{passed_count} passed, {len(results) - passed_count} failed, {len(results)} rows "
          f"in {time.monotonic() - started:.0f}s")
    return 0 if passed_count == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
