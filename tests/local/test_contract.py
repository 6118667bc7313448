"""The shared provider contract, unchanged, against the local provider training a tiny
real model in detached worker processes and serving it over HTTP."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cloudtune.types import FineTuneSpec
from cloudtune.testing import ContractEnv, ProviderContract
from tests.local.conftest import fast_hyperparameters


def _force_status(job_id: str, raw: str) -> None:
    """Make the job report ``raw`` from now on: stop its worker (the only writer of
    status.json while alive), then write the status file."""
    from local_backend.jobs import JobDir
    from local_backend.procs import pid_alive

    job = JobDir(job_id)
    pid = job.worker_pid()
    if pid_alive(pid, expect=str(job.path)):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid, expect=str(job.path)) and time.monotonic() < deadline:
            time.sleep(0.05)
    job.write_status(status=raw)


@pytest.fixture
def contract_env(provider, training_file: Path, tiny_model_dir: Path) -> ContractEnv:  # type: ignore[no-untyped-def]
    base_model = str(tiny_model_dir)
    return ContractEnv(
        provider=provider,
        base_model=base_model,
        training_file=training_file,
        make_spec=lambda **kw: FineTuneSpec(
            provider="local",
            base_model=base_model,
            training_file=training_file,
            hyperparameters=fast_hyperparameters(epochs=2),
            **kw,
        ),
        wait_timeout_s=300,
        sleep=time.sleep,
        clock=time.monotonic,
        force_status=_force_status,
        model_exists=provider.model_exists,
        refuses_delete_while_deployed=True,
    )


class TestLocalContract(ProviderContract):
    pass
