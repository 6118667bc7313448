"""The state-store contract, written once, for every backend (fsspec's abstract tests are the model).

A backend's tests subclass :class:`StateStoreContract` and provide a ``state_url`` fixture (a fresh,
empty state per test; environment such as ``AZURE_STORAGE_CONNECTION_STRING`` set with
``monkeypatch``); a backend whose dead holders' locks come back only after a while (a lease) sets
``lock_expiry_s``, and :meth:`StateStoreContract.set_schema_version` says how a newer cloudtune
would mark its state. Shipped in the package so a plugin backend runs the same tests::

    from cloudtune.state.testing import StateStoreContract

    class TestMyStore(StateStoreContract):
        lock_expiry_s = 0

        @pytest.fixture
        def state_url(self): ...

        def set_schema_version(self, url, version): ...

The suite is never edited to make a backend pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtune import errors
from cloudtune.state import SCHEMA_VERSION, StateStore, connect_state
from cloudtune.types import (
    CleanupRecord,
    DeployOptions,
    FineTuneSpec,
    Hyperparameters,
    JobState,
    Resource,
    ResourceState,
    RunError,
    Step,
)

_HOLD = """
import sys, time
from cloudtune.state import connect_state
store = connect_state(sys.argv[1])
store.acquire(sys.argv[2], command="cloudtune contract-holder")
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
store.close()
"""

_WRITE = """
import sys
from cloudtune.state import connect_state
from cloudtune.types import FineTuneSpec
store = connect_state(sys.argv[1])
shared, me, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(count):
    store.create_run(FineTuneSpec(provider="p", base_model="m", training_file="t.jsonl"), run_id=f"{me}-{i:03d}")
    store.intent(shared, "write", writer=me, n=i)
store.close()
"""

_SAVE = """
import sys
from cloudtune.state import connect_state
from cloudtune.types import FineTuneSpec
store = connect_state(sys.argv[1])
me, count, shared = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
for i in range(count):
    for run_id in shared:  # every writer saves every shared run: the last save of each is its truth
        run = store.get_run(run_id)
        run.fine_tuned_model, run.job_id = f"{me}-{i}", f"job-{me}"
        store.save(run)
    store.create_run(FineTuneSpec(provider="p", base_model=f"m-{me}", training_file="t.jsonl"), run_id=f"{me}-{i:03d}")
store.close()
"""


def spec(**extra: Any) -> FineTuneSpec:
    return FineTuneSpec(provider="memory", base_model="base-model", training_file="train.jsonl", **extra)


class StateStoreContract:
    #: how long a killed holder's lock may outlive it (0: at once, as flock and PostgreSQL sessions)
    lock_expiry_s: float = 0

    @pytest.fixture
    def state_url(self) -> str:
        raise NotImplementedError("a backend's test class provides a fresh state_url per test")

    def set_schema_version(self, url: str, version: int) -> None:
        raise NotImplementedError("a backend's test class says how a newer cloudtune marks its state")

    @pytest.fixture
    def store(self, state_url: str) -> Iterator[StateStore]:
        store = connect_state(state_url)
        yield store
        store.close()

    def _child(self, script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ))

    def _hold(self, url: str, run_id: str, seconds: float = 120) -> subprocess.Popen[str]:
        holder = self._child(_HOLD, url, run_id, str(seconds))
        line = holder.stdout.readline() if holder.stdout else ""
        if line.strip() != "locked":
            holder.kill()
            raise AssertionError(f"the holder could not lock: {holder.communicate()}")
        return holder

    # ------------------------------------------------------------------ records
    def test_every_run_field_round_trips(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec(suffix="s", seed=7, hyperparameters=Hyperparameters(epochs=2),
                                    deploy=DeployOptions(smoke_prompt="hi"), metadata={"team": "ml"}))
        run.step, run.status = Step.DEPLOYED, "succeeded"
        run.training_file_id, run.validation_file_id = "file-t", "file-v"
        run.job_id, run.job_state, run.last_event_id = "job-1", JobState.SUCCEEDED, "ev-9"
        run.fine_tuned_model = "ft:model"
        run.resources = [Resource(kind="model", id="ft:model", name="n", state=ResourceState.OWNED)]
        run.cleanups = [CleanupRecord(reason="test")]
        run.smoke_test, run.evaluation = "answer", {"exact_match": 0.5, "token_f1": 0.5, "examples": 2}
        run.error = RunError(message="m", type="JobFailed")
        store.save(run)
        other = connect_state(state_url)  # another process's view
        try:
            loaded = other.get_run(run.run_id)
        finally:
            other.close()
        assert loaded.model_dump(mode="json") == run.model_dump(mode="json")

    def test_create_refuses_an_existing_id_and_adopt_replaces(self, store: StateStore) -> None:
        run = store.create_run(spec())
        with pytest.raises(Exception):
            store.create_run(spec(), run_id=run.run_id)
        run.fine_tuned_model = "adopted"
        store.adopt_run(run)
        assert store.get_run(run.run_id).fine_tuned_model == "adopted"

    def test_journal_keeps_intents_and_their_answers(self, store: StateStore) -> None:
        run = store.create_run(spec())
        first = store.intent(run.run_id, "upload_file", role="train")
        store.result(run.run_id, "upload_file", first, value="file-1")
        second = store.intent(run.run_id, "create_job", attempt=1)
        history = [s for s in store.history(run.run_id) if s.action != "created_on"]
        assert [(s.action, s.phase) for s in history] == [
            ("upload_file", "intent"), ("upload_file", "result"), ("create_job", "intent")]
        assert history[1].intent_id == first and history[1].data == {"value": "file-1"}
        assert [s.id for s in store.pending_intents(run.run_id)] == [second]

    def test_list_is_newest_first_with_limit_and_age(self, store: StateStore) -> None:
        ids = []
        for n in range(3):
            run = store.create_run(spec(), run_id=f"20261101-00000{n}-aaaaaa")
            ids.append(run.run_id)
            time.sleep(0.02)
        assert [r.run_id for r in store.list_runs()] == ids[::-1]
        assert [r.run_id for r in store.list_runs(limit=2)] == ids[:0:-1]
        assert store.latest_run_id() == ids[-1]
        assert store.list_runs(older_than_s=3600) == []
        assert store.get_run(ids[0][:17]).run_id == ids[0]  # a unique prefix selects

    def test_an_unreadable_record_is_skipped_and_named(self, store: StateStore) -> None:
        good, bad = store.create_run(spec()), store.create_run(spec())
        doc = json.loads(bad.model_dump_json())
        doc["step"] = "from_the_future"
        store._write_run(bad.run_id, bad.provider, bad.created_at.timestamp(), "active", "from_the_future",
                         json.dumps(doc), mode="update")
        assert [r.run_id for r in store.list_runs()] == [good.run_id]
        assert [u.run_id for u in store.unreadable] == [bad.run_id]
        with pytest.raises(errors.InvalidInput, match=bad.run_id):
            store.get_run(bad.run_id)

    def test_concurrent_writers_never_lose_a_record(self, store: StateStore, state_url: str) -> None:
        shared = store.create_run(spec()).run_id
        writers = [self._child(_WRITE, state_url, shared, f"w{n}", "8") for n in range(4)]
        for writer in writers:
            out, err = writer.communicate(timeout=180)
            assert writer.returncode == 0, err
        assert len(store.run_ids()) == 1 + 4 * 8
        steps = [s for s in store.history(shared) if s.action == "write"]
        assert sorted((s.data["writer"], s.data["n"]) for s in steps) == [
            (f"w{n}", i) for n in range(4) for i in range(8)]
        assert len({s.id for s in steps}) == len(steps)

    def test_list_equals_each_document_after_concurrent_saves(self, store: StateStore, state_url: str) -> None:
        # a backend may answer `list` from summaries; they must agree with the documents themselves
        shared = [store.create_run(spec()).run_id for _ in range(3)]
        writers = [self._child(_SAVE, state_url, f"s{n}", "4", *shared) for n in range(3)]
        for writer in writers:
            out, err = writer.communicate(timeout=180)
            assert writer.returncode == 0, err
        listed = store.list_runs(limit=1000)
        assert sorted(r.run_id for r in listed) == sorted(shared + [f"s{n}-{i:03d}" for n in range(3) for i in range(4)])
        for run in listed:
            assert run.model_dump(mode="json") == store.load_run(run.run_id).model_dump(mode="json")
        assert {store.load_run(r).fine_tuned_model for r in shared} <= {f"s{n}-3" for n in range(3)}  # each last save
        assert [r.run_id for r in listed] == store.run_ids()

    # ------------------------------------------------------------------ locks
    def test_a_second_locker_is_refused_naming_the_holder(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec())
        holder = self._hold(state_url, run.run_id)
        try:
            with pytest.raises(errors.RunLocked) as refused:
                store.acquire(run.run_id)
            assert f"pid {holder.pid}" in str(refused.value) and "contract-holder" in str(refused.value)
            assert store.is_locked_elsewhere(run.run_id)
            assert [h.pid for h in store.lock_holders()] == [holder.pid]
        finally:
            holder.kill()
            holder.wait()

    def test_a_released_lock_is_free_and_reentry_is_harmless(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec())
        with store.lock(run.run_id):
            with store.lock(run.run_id):  # the same store again: re-entered, not refused
                assert store.held(run.run_id)
            assert store.held(run.run_id)
            assert store.lock_holder(run.run_id).pid == os.getpid()  # type: ignore[union-attr]
        other = connect_state(state_url)
        try:
            with other.lock(run.run_id):
                pass
        finally:
            other.close()

    def test_a_killed_lockers_lock_comes_back(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec())
        holder = self._hold(state_url, run.run_id)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        # nobody releases it: the backend's own mechanism does (flock, session end, lease expiry)
        with store.lock(run.run_id, wait_s=self.lock_expiry_s + 30):
            assert store.held(run.run_id)

    def test_wait_lock_waits_for_the_holder(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec())
        holder = self._hold(state_url, run.run_id, seconds=1.5)
        try:
            with store.lock(run.run_id, wait_s=60):
                assert holder.wait(timeout=30) == 0  # the holder finished and released it
        finally:
            holder.kill()

    # ------------------------------------------------------------------ versions
    def test_a_newer_schema_is_refused_and_left_alone(self, store: StateStore, state_url: str) -> None:
        run = store.create_run(spec())
        store.close()
        self.set_schema_version(state_url, SCHEMA_VERSION + 1)
        for _ in range(2):  # refused, and the refusal wrote nothing (the newer version is still there)
            with pytest.raises(errors.StateUnusable, match=f"schema version {SCHEMA_VERSION + 1}"):
                connect_state(state_url)
        self.set_schema_version(state_url, SCHEMA_VERSION)  # as the newer cloudtune left it, our record intact
        again = connect_state(state_url)
        try:
            assert again.get_run(run.run_id).run_id == run.run_id
            assert again.schema_version() == SCHEMA_VERSION
        finally:
            again.close()
