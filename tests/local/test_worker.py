"""The detached worker: killed mid-run it is reported failed (resumable), and resuming
from its checkpoint ends with the same adapter as an uninterrupted run; pause/resume;
state survives a fresh provider instance (another CLI process)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.types import FineTuneSpec, JobState
from tests.local.conftest import fast_hyperparameters, write_training_file


@pytest.fixture(scope="module")
def slower_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Big enough that a run lasts a few seconds, so it can be killed in the middle."""
    from local_backend.tiny import build_tiny_model
    from tests.local.conftest import chat_example

    texts = [json.dumps(chat_example(i)) for i in range(20)]
    return build_tiny_model(
        tmp_path_factory.mktemp("slower") / "model", texts, hidden_size=256, intermediate_size=768, layers=4
    )


def _spec(model: Path, train: Path) -> FineTuneSpec:
    return FineTuneSpec(
        provider="local",
        base_model=str(model),
        training_file=train,
        seed=3,
        hyperparameters=fast_hyperparameters(epochs=8, checkpoint_every=2, lora_dropout=0.1, learning_rate=3e-3),
    )


def _start(provider, spec: FineTuneSpec, run_id: str):  # type: ignore[no-untyped-def]
    file_id = provider.upload_file(spec.training_file)
    return provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id)


def _wait(provider, job_id: str):  # type: ignore[no-untyped-def]
    return poller.wait_for_job(provider, job_id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)


def _adapter(job_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(job_dir / "adapter" / "adapter_model.safetensors"))


def test_killed_worker_is_failed_then_resumes_to_the_same_adapter(
    provider, local_home: Path, slower_model_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    import torch

    from local_backend.jobs import JobDir

    train = write_training_file(tmp_path / "train.jsonl", count=16)
    spec = _spec(slower_model_dir, train)
    reference = _wait(provider, _start(provider, spec, "run-reference").id)
    assert reference.state == JobState.SUCCEEDED

    job = _start(provider, spec, "run-killed")
    job_dir = JobDir(job.id)
    deadline = time.monotonic() + 120
    while not job_dir.checkpoints() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job_dir.checkpoints(), "no checkpoint appeared"
    pid = job_dir.worker_pid()
    os.kill(pid, signal.SIGKILL)  # the worker this test started
    # a big process killed on a loaded machine takes a moment to be gone: its lock is released only
    # when its last thread has exited, after its main thread already shows as a zombie
    gone_by = time.monotonic() + 30
    while job_dir.worker_alive() and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not job_dir.worker_alive(), "the killed worker still holds its lock after 30 s"

    killed = provider.get_job(job.id)
    assert killed.state == JobState.FAILED, "the run finished before it could be killed"
    assert killed.error is not None and killed.error.code == "worker_died"
    assert "resume" in killed.error.message
    assert any("Worker died" in e.message for e in provider.list_events(job.id))

    resumed = provider.resume_job(job.id)
    assert resumed.state in (JobState.QUEUED, JobState.RUNNING)
    final = _wait(provider, job.id)
    assert final.state == JobState.SUCCEEDED, final.error
    events = provider.list_events(job.id, limit=10_000)
    assert any(e.message.startswith("Resumed from step-") for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))

    expected, got = _adapter(JobDir(reference.id).path), _adapter(job_dir.path)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


def test_pause_saves_and_resume_finishes(provider, slower_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from local_backend.jobs import JobDir

    train = write_training_file(tmp_path / "train.jsonl", count=16)
    job = _start(provider, _spec(slower_model_dir, train), "run-pause")
    job_dir = JobDir(job.id)
    deadline = time.monotonic() + 120
    while provider.get_job(job.id).metrics.get("step", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    provider.pause_job(job.id)
    paused = _wait_for(provider, job.id, JobState.PAUSED)
    assert paused.state == JobState.PAUSED
    assert job_dir.checkpoints()
    with pytest.raises(errors.Conflict):
        provider.resume_job(_finished_job(provider, slower_model_dir, tmp_path))  # succeeded: nothing to resume
    provider.resume_job(job.id)
    assert _wait(provider, job.id).state == JobState.SUCCEEDED


def _wait_for(provider, job_id: str, state: JobState):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = provider.get_job(job_id)
        if job.state == state or job.is_terminal:
            return job
        time.sleep(0.05)
    return provider.get_job(job_id)


def _finished_job(provider, model: Path, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    train = write_training_file(tmp_path / "small.jsonl", count=4)
    spec = FineTuneSpec(provider="local", base_model=str(model), training_file=train, hyperparameters=fast_hyperparameters(epochs=1))
    job = _start(provider, spec, "run-done")
    assert _wait(provider, job.id).state == JobState.SUCCEEDED
    return job.id


def test_state_survives_a_new_provider_instance(provider, tiny_model_dir: Path, training_file: Path) -> None:  # type: ignore[no-untyped-def]
    from providers.local import LocalProvider

    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training_file, hyperparameters=fast_hyperparameters(epochs=1))
    job = _start(provider, spec, "run-shared")
    other = LocalProvider({})  # what a second CLI process sees: only the disk
    assert [j.id for j in other.find_jobs("run-shared")] == [job.id]
    assert _wait(other, job.id).state == JobState.SUCCEEDED
    assert other.get_job(job.id).fine_tuned_model == f"local:{job.id}"
    assert job.id in [j.id for j in other.list_jobs()]


def test_bad_hyperparameter_is_a_config_error(provider, tiny_model_dir: Path, training_file: Path) -> None:  # type: ignore[no-untyped-def]
    from cloudtune.types import Hyperparameters

    spec = FineTuneSpec(
        provider="local", base_model=str(tiny_model_dir), training_file=training_file,
        hyperparameters=Hyperparameters(extra={"lora_rnak": 4}),
    )
    with pytest.raises(errors.ConfigError) as caught:
        _start(provider, spec, "run-bad")
    assert "lora_r" in (caught.value.hint or "")


def test_one_worker_per_job_even_when_a_second_is_started(  # type: ignore[no-untyped-def]
    provider, slower_model_dir: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from local_backend.jobs import JobDir

    train = write_training_file(tmp_path / "train.jsonl", count=16)
    job = _start(provider, _spec(slower_model_dir, train), "run-one-worker")
    job_dir = JobDir(job.id)
    deadline = time.monotonic() + 60
    while not job_dir.worker_holds_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job_dir.worker_holds_lock()
    first = job_dir.worker_pid()
    assert job_dir.start_worker() == first  # asked again: the running one is kept
    second = subprocess.run([sys.executable, "-m", "local_backend.worker", str(job_dir.path)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "another worker already runs" in second.stderr
    assert job_dir.worker_pid() == first
    assert provider.resume_job(job.id).state != JobState.FAILED  # a live job is left as it is
    final = _wait(provider, job.id)
    assert final.state == JobState.SUCCEEDED
    started = [e for e in provider.list_events(job.id, limit=10_000) if e.message.startswith("Worker started")]
    assert len(started) == 1
