"""``python -m tests.faults [-k TEXT] [--list]``: run the fault matrix and print one row per
(scenario, target) with pass/fail and the reason, then the counts. Exit 0 only if every
selected row passed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("-k", dest="select", action="append", default=[],
                        help="run only rows whose id contains this text (repeatable: any of them)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)

    from tests.faults.matrix import Bystanders, all_scenarios, outcome
    from tests.faults.targets import Targets

    rows = [row for row in all_scenarios() if not args.select or any(s in row.id for s in args.select)]
    if args.list:
        for row in rows:
            print(f"{row.name:<44} {row.target:<17} issue 9 {row.issue}")
        print(f"{len(rows)} rows")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="cloudtune-faults-"))
    targets = Targets(workdir)
    bystanders = Bystanders(targets, workdir)
    results = []
    started = time.monotonic()
    try:
        for row in rows:
            passed, reason = outcome(targets, bystanders, row, workdir)
            results.append((row, passed, reason))
            print(f"{row.name:<44} {row.target:<17} {'pass' if passed else 'FAIL'}  {reason}", flush=True)
    finally:
        targets.close()
    passed_count = sum(1 for _, passed, _ in results if passed)
    print(f"\n{passed_count} passed, {len(results) - passed_count} failed, {len(results)} rows "
          f"in {time.monotonic() - started:.0f}s")
    return 0 if passed_count == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
