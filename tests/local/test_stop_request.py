"""How a pause or cancel reaches a training worker: the CLI writes the job's ``stop`` file and the
worker reads it between steps. A reader must never see a half-written request (a pause once read
as an empty file became a cancel under a loaded CI machine)."""

from __future__ import annotations

import threading
from pathlib import Path

from local_backend.jobs import JobDir
from local_backend.runner import JobRunner


def _job(tmp_path: Path) -> JobDir:
    job_dir = tmp_path / "ftjob-local-stop"
    job_dir.mkdir()
    job = JobDir(job_dir.name)
    job.path = job_dir
    return job


def test_the_worker_reads_pause_cancel_an_unknown_word_and_a_file_caught_mid_write(tmp_path: Path) -> None:
    job = _job(tmp_path)
    runner = JobRunner(job.path)
    assert runner.stop_requested() is None  # no request
    for written, read in (("pause", "pause"), ("cancel", "cancel"), ("pause\n", "pause"), ("halt", "cancel"), ("", None)):
        job.stop_path.write_text(written)
        assert runner.stop_requested() == read, written


def test_a_reader_never_sees_an_empty_or_torn_request(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job.request_stop("cancel")
    seen: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            seen.append(job.stop_path.read_text())

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for index in range(3000):
            job.request_stop("pause" if index % 2 else "cancel")
    finally:
        done.set()
        reader.join()
    assert len(seen) > 100 and set(seen) <= {"pause", "cancel"}, sorted(set(seen))
    assert not [p for p in job.path.iterdir() if p.name.startswith(".stop.")]  # no temporary file left behind
