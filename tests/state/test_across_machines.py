"""Two "machines" (CLIs with their own CLOUDTUNE_HOME) sharing one state, against the OpenAI
emulator whose job create answers late (8 s in the issue, 20 s here) - the race that made two paid jobs when each
machine had its own ledger. Judged from the emulator's own records."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openai.conftest import write_training_file
from tests.openai.test_cli_e2e import KEY, Session, _doc
from tests.support.emulators import EmulatorProcess
from tests.support.state_servers import AzuriteServer, PostgresServer

# the runner A waited 8 s for its job create; here 20 s, so that runner B's two commands
# surely fall inside that window on a loaded 2-core CI machine (a window, never a timing assertion)
SLOW_CREATE_S = 20

pytestmark = pytest.mark.slow  # CLIs against real servers (and an emulator)


@pytest.fixture(params=["postgresql", "azblob"])
def shared_state(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.new_database()
    azurite: AzuriteServer = request.getfixturevalue("azurite")  # its connection string is in the environment
    return azurite.new_url(lease_seconds=15)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    write_training_file(tmp_path / "train.jsonl", 12)
    with EmulatorProcess("openai", "--port", "0", "--job-duration", "1.5", "--api-key", KEY, cwd=tmp_path) as process:
        yield process.url


class Machine(Session):
    """A runner: the same emulator and state, its own CLOUDTUNE_HOME."""

    def __init__(self, tmp: Path, url: str, name: str, state: str) -> None:
        super().__init__(tmp, url)
        self.name, self.shared_state = name, state

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(CLOUDTUNE_HOME=str(self.tmp / f"home-{self.name}"), CLOUDTUNE_STATE=self.shared_state,
                           **extra)


def _wait_until(condition, what: str, process=None, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the runner ended first: {process.communicate()}")
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_a_second_machine_sees_the_run_and_never_makes_a_second_job(
        tmp_path: Path, emulator: str, shared_state: str) -> None:
    a, b = (Machine(tmp_path, emulator, name, shared_state) for name in ("a", "b"))
    a.faults({"route": "POST /v1/fine_tuning/jobs$", "kind": "latency", "latency_s": SLOW_CREATE_S})
    runner_a = a.start_run("--no-deploy", "--cleanup", "never")
    _wait_until(lambda: any(h.startswith("latency:") for h in a.control("/_emulator/faults")["hits"]),
                "runner A is inside its slow job create", runner_a)

    listed = b("list", "--json")
    assert listed.returncode == 0, listed.stderr
    (seen,) = _doc(listed)["runs"]
    run_id = seen["run_id"]
    refused = b("resume", run_id, "--json")
    assert refused.returncode == 6, refused.stderr
    assert f"pid {runner_a.pid}" in refused.stderr and "cloudtune run" in refused.stderr, refused.stderr

    out, err = runner_a.communicate(timeout=120)
    assert runner_a.returncode == 0, err
    state = a.state()
    assert state["jobs"] == 1, f"two machines made two jobs: {state['job_ids']}"
    assert b("status", run_id, "--offline", "--json").returncode == 0
    assert _doc(b("status", run_id, "--offline", "--json"))["job_id"] == state["job_ids"][0]


def test_a_killed_runner_is_resumed_by_another_machine_into_its_one_job(
        tmp_path: Path, emulator: str, shared_state: str) -> None:
    a, b = (Machine(tmp_path, emulator, name, shared_state) for name in ("a", "b"))
    # the job is made at once; its answer is held back, and the runner is killed while it waits
    a.faults({"route": "POST /v1/fine_tuning/jobs$", "kind": "latency", "latency_s": SLOW_CREATE_S, "after": True})
    runner_a = a.start_run("--no-deploy", "--cleanup", "never")
    _wait_until(lambda: a.state()["jobs"] == 1, "the job exists", runner_a)
    runner_a.send_signal(signal.SIGKILL)
    runner_a.communicate()
    a.control("/_emulator/faults", [])
    run_id = _doc(b("list", "--json"))["runs"][0]["run_id"]

    if shared_state.startswith("azblob"):
        # the dead runner's lease is still live until it expires: refused at once, naming the dead holder
        early = b("resume", run_id, "--json")
        assert early.returncode == 6 and f"pid {runner_a.pid}" in early.stderr, early.stderr
        resumed = b("resume", run_id, "--json", "--wait-lock", "60", timeout=150)
    else:  # PostgreSQL ended the dead runner's session, and its advisory lock with it
        resumed = b("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    state = b.state()
    assert state["jobs"] == 1, f"resume made a second job: {state['job_ids']}"
    assert _doc(resumed)["job_id"] == state["job_ids"][0] and _doc(resumed)["status"] == "succeeded"
    assert state["files_by_purpose"]["fine-tune"] == 1
