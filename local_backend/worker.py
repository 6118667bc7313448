"""The training worker: ``python -m local_backend.worker JOB_DIR``.

Runs detached (its own session) so it outlives the CLI that started it. It takes the job's
``worker.lock`` (one worker per job), then runs the job in this process
(:mod:`local_backend.runner`) or, for a job on several processes, supervises torchrun
(:mod:`local_backend.launch`). ``--node-rank K`` runs another machine's ranks of a
multi-node job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from local_backend import procs
from local_backend.runner import JobRunner

_Worker = JobRunner  # the name earlier code and docs used


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[1] == "--node-rank":
        # Another machine of a multi-node job (job directory on shared storage): its ranks only.
        from local_backend.launch import join

        return join(Path(argv[0]), int(argv[2]))
    if len(argv) != 1:
        print("usage: python -m local_backend.worker JOB_DIR [--node-rank K]", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    # One worker per job, whatever happens above us: a second one (a restart racing a worker that
    # was only slow to start) leaves at once instead of training over the first one's files.
    import fcntl

    lock = open(job_dir / "worker.lock", "a")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another worker already runs {job_dir.name}; leaving it alone", file=sys.stderr)
        return 0
    (job_dir / "worker.pid").write_text(str(os.getpid()))  # the lock holder is the worker of record
    worker = JobRunner(job_dir)
    layout = worker.job.spec().get("distributed")
    if layout:  # several processes: this one supervises torchrun (local_backend/launch.py)
        from local_backend.launch import supervise

        return supervise(worker.job, layout)
    procs.skip_unused_imports()  # this process trains (a supervisor above never imports torch)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
