"""The one poller, with an injected clock: an hour of job runs in milliseconds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cloudtune import errors, poller
from cloudtune.types import CheckResult, Deployment, DeploymentState, Job, JobEvent, JobState
from tests.support.memory_provider import MemoryProvider


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class ScriptedProvider(MemoryProvider):
    """States and events follow a timeline in (fake) seconds."""

    name = "scripted"

    def __init__(self, time_: FakeTime, timeline: list[tuple[float, str]], events: list[tuple[float, str, bool]],
                 failures: dict[int, errors.CloudtuneError] | None = None) -> None:
        super().__init__({}, sleep=time_.sleep, clock=time_.clock)
        self.time = time_
        self.timeline = timeline
        self.event_script = events
        self.failures = failures or {}
        self.requests = 0

    def _tick(self) -> None:
        self.requests += 1
        failure = self.failures.pop(self.requests, None)
        if failure is not None:
            raise failure

    def get_job(self, job_id: str) -> Job:
        self._tick()
        raw = [status for at, status in self.timeline if at <= self.time.now][-1]
        return Job(id=job_id, provider=self.name, state=self.map_status(raw), provider_status=raw)

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        self._tick()
        visible = [
            JobEvent(id=f"e{i}", created_at=datetime.fromtimestamp(at, timezone.utc), message=msg,
                     data={"type": "metrics", "step": i} if metric else {})
            for i, (at, msg, metric) in enumerate(self.event_script) if at <= self.time.now
        ]
        ids = [e.id for e in visible]
        start = ids.index(after) + 1 if after in ids else 0
        return visible[start : start + limit]

    def check(self) -> CheckResult:  # pragma: no cover - not used
        raise NotImplementedError


def test_terminal_state_ends_the_wait_and_failure_is_a_result() -> None:
    t = FakeTime()
    provider = ScriptedProvider(t, [(0, "queued"), (10, "running"), (50, "failed")], [])
    job = poller.wait_for_job(provider, "j")
    assert job.state == JobState.FAILED
    assert 50 <= t.now < 80
    with pytest.raises(errors.JobFailed):
        poller.wait_for_job(provider, "j", raise_on_failure=True)


def test_interval_grows_while_nothing_changes_and_resets_on_change() -> None:
    t = FakeTime()
    provider = ScriptedProvider(t, [(0, "running"), (1000, "succeeded")], [])
    poller.wait_for_job(provider, "j")
    assert t.sleeps[0] == poller.DEFAULT_POLICY.initial_s
    assert t.sleeps[1] > t.sleeps[0]
    assert max(t.sleeps) == poller.DEFAULT_POLICY.max_s
    assert all(b >= a for a, b in zip(t.sleeps, t.sleeps[1:]))

    t2 = FakeTime()
    provider = ScriptedProvider(t2, [(0, "queued"), (300, "running"), (2000, "succeeded")], [])
    poller.wait_for_job(provider, "j")
    reset = [i for i, (a, b) in enumerate(zip(t2.sleeps, t2.sleeps[1:])) if b < a]
    assert reset, "the interval must go back to short after the state changed"
    assert t2.sleeps[reset[0] + 1] == poller.DEFAULT_POLICY.initial_s


def test_follow_shows_each_event_once_in_order_within_the_latency_bound() -> None:
    t = FakeTime()
    script = [(float(at), f"step {at}", True) for at in range(30, 3600, 30)] + [(3590, "done", False)]
    provider = ScriptedProvider(t, [(0, "running"), (3600, "succeeded")], script)
    shown: list[tuple[str, float]] = []
    job = poller.wait_for_job(provider, "j", on_event=lambda e: shown.append((e.id, t.now)))
    assert job.state == JobState.SUCCEEDED
    assert [eid for eid, _ in shown] == [f"e{i}" for i in range(len(script))]
    delays = [seen_at - script[int(eid[1:])][0] for eid, seen_at in shown]
    assert max(delays) <= poller.DEFAULT_POLICY.event_latency_s
    assert provider.requests <= 160  # about one request per tick, not two


def test_transient_errors_honour_retry_after_and_timeout_exits_5() -> None:
    t = FakeTime()
    provider = ScriptedProvider(
        t, [(0, "running"), (100, "succeeded")], [],
        failures={1: errors.RateLimited("slow down", retry_after=7.0), 2: errors.TransientError("503")},
    )
    job = poller.wait_for_job(provider, "j")
    assert job.state == JobState.SUCCEEDED
    assert t.sleeps[0] == 7.0

    t2 = FakeTime()
    slow = ScriptedProvider(t2, [(0, "running")], [])
    with pytest.raises(errors.WaitTimeout) as caught:
        poller.wait_for_job(slow, "j", timeout_s=600)
    assert caught.value.exit_code == errors.EXIT_WAIT_TIMEOUT
    assert t2.now == pytest.approx(600)
    assert "running" in str(caught.value)


def test_unknown_status_keeps_waiting_instead_of_crashing() -> None:
    t = FakeTime()
    provider = ScriptedProvider(t, [(0, "brand_new_status"), (40, "succeeded")], [])
    seen: list[JobState] = []
    job = poller.wait_for_job(provider, "j", on_job=lambda j: seen.append(j.state))
    assert seen[0] == JobState.UNKNOWN and job.state == JobState.SUCCEEDED


class DeploymentScript(MemoryProvider):
    def __init__(self, states: list[str | None]) -> None:
        super().__init__({}, sleep=lambda s: None)
        self.states = states

    def get_deployment(self, name: str) -> Deployment:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            raise errors.NotFound("gone")
        return Deployment(name=name, model="m", state=DeploymentState(state))


def test_wait_for_deployment_ready_deleted_and_failed() -> None:
    ready = poller.wait_for_deployment(DeploymentScript(["creating", "creating", "ready"]), "d", target="ready")
    assert ready is not None and ready.state == DeploymentState.READY
    assert poller.wait_for_deployment(DeploymentScript(["deleting", None]), "d", target="deleted") is None
    assert poller.wait_for_deployment(DeploymentScript(["deleted"]), "d", target="deleted") is None
    with pytest.raises(errors.ProviderError):
        poller.wait_for_deployment(DeploymentScript(["creating", "failed"]), "d", target="ready")
    with pytest.raises(errors.NotFound):
        poller.wait_for_deployment(DeploymentScript([None]), "d", target="ready")
