"""The one poller: waiting for jobs and deployments, and following job events.

* Terminal states always end a wait; a failed or cancelled job is *returned*
  (``raise_on_failure=True`` turns it into :class:`~cloudtune.errors.JobFailed`).
* The interval adapts: short at first, growing while nothing changes, back to
  short when the job's state changes. Metric events are not changes.
* While following events the interval is capped so that every event is shown
  within ``event_latency_s`` (and is not reset on a change, the cap already
  bounds lateness); the job itself is fetched only when an event may mean its
  state moved (:meth:`Provider.event_may_change_state`) or ``job_refresh_s``
  passed, so a long job costs about one request per tick.
* Transient errors are waited out (their ``Retry-After`` first).
* Past ``timeout_s`` a :class:`~cloudtune.errors.WaitTimeout` (exit 5) is
  raised; the remote job is untouched and can be resumed.
* ``sleep`` and ``clock`` are injectable so tests and benchmarks run an hour of
  job in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudtune import errors
from cloudtune.types import Deployment, DeploymentState, Job, JobEvent

if TYPE_CHECKING:
    from cloudtune.provider import Provider

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class PollPolicy:
    """Delays are data (botocore waiters), not constants buried in loops."""

    initial_s: float = 2.0
    growth: float = 2.0
    max_s: float = 60.0
    event_latency_s: float = 30.0  # cap while following events
    job_refresh_s: float = 600.0  # fetch the job at least this often while following
    max_consecutive_errors: int = 20
    events_page: int = 100

    def next_interval(self, current: float, changed: bool, following: bool) -> float:
        if following:
            # The event-latency cap already bounds how late anything is seen; going back to
            # short polls on every state message would only spend requests.
            return min(current * self.growth, self.max_s, self.event_latency_s)
        if changed:
            return min(self.initial_s, self.max_s)
        return min(current * self.growth, self.max_s)


DEFAULT_POLICY = PollPolicy()


def default_policy() -> PollPolicy:
    """The default policy, with ``CLOUDTUNE_POLL_INTERVAL`` / ``CLOUDTUNE_POLL_MAX`` (seconds)
    overriding the first and the longest interval (dry runs against an emulator, tests)."""
    import os

    initial = os.environ.get("CLOUDTUNE_POLL_INTERVAL")
    longest = os.environ.get("CLOUDTUNE_POLL_MAX")
    if not initial and not longest:
        return DEFAULT_POLICY
    first = float(initial) if initial else DEFAULT_POLICY.initial_s
    cap = float(longest) if longest else max(DEFAULT_POLICY.max_s, first)
    return PollPolicy(initial_s=first, max_s=cap, event_latency_s=min(DEFAULT_POLICY.event_latency_s, cap))


class _Waiter:
    """Shared sleep/timeout/error bookkeeping for one wait."""

    def __init__(self, policy: PollPolicy, timeout_s: float | None, sleep: Sleep, clock: Clock) -> None:
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.deadline = None if timeout_s is None else clock() + timeout_s
        self.interval = policy.initial_s
        self.errors_in_row = 0
        self.requests = 0

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def pause(self, seconds: float) -> None:
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - self.clock()))
        if seconds > 0:
            self.sleep(seconds)

    def transient(self, error: errors.TransientError, what: str) -> None:
        """Wait out a transient error (its Retry-After first, else a growing back-off). A
        provider that stays unreachable ends the wait like a timeout, never like a failed
        job: the remote job is untouched and resumable."""
        self.errors_in_row += 1
        if self.errors_in_row > self.policy.max_consecutive_errors or self.expired():
            raise errors.WaitTimeout(
                f"Stopped waiting for {what}: {self.errors_in_row} transient errors in a row, the last: {error}",
                hint="Nothing was lost; run `cloudtune resume RUN` when the provider answers again.",
                provider=error.provider,
            ) from error
        backoff = self.policy.initial_s * 2 ** min(self.errors_in_row, 10)
        delay = error.retry_after if error.retry_after is not None else backoff
        self.pause(min(delay, self.policy.max_s))

    def ok(self) -> None:
        self.errors_in_row = 0


def poll_job(
    provider: "Provider",
    job_id: str,
    *,
    follow: bool = True,
    after: str | None = None,
    timeout_s: float | None = None,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
    policy: PollPolicy | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[Job | JobEvent]:
    """The polling loop, as a generator: yields every new :class:`JobEvent` once, in order
    (when ``follow``), and every fetched :class:`Job`; ends after yielding a terminal job."""
    policy = policy or default_policy()
    waiter = _Waiter(policy, timeout_s, sleep or provider.sleep, clock or provider.clock)
    cursor = after
    job: Job | None = None
    last_job_fetch = float("-inf")
    need_job = True
    try:
        while True:
            changed = False
            try:
                if follow:
                    events = provider.list_events(job_id, after=cursor, limit=policy.events_page)
                    waiter.requests += 1
                    for event in events:
                        cursor = event.id
                        if provider.event_may_change_state(event):
                            need_job = changed = True
                        yield event
                    if len(events) >= policy.events_page:
                        continue  # more pages waiting: drain before sleeping
                if need_job or not follow or waiter.clock() - last_job_fetch >= policy.job_refresh_s:
                    fresh = provider.get_job(job_id)
                    waiter.requests += 1
                    last_job_fetch = waiter.clock()
                    need_job = False
                    changed = changed or job is None or fresh.state != job.state
                    job = fresh
                    if job.is_terminal and follow:
                        # a last look so the closing events (final metrics, results) are shown
                        closing = provider.list_events(job_id, after=cursor, limit=policy.events_page)
                        waiter.requests += 1
                        for event in closing:
                            cursor = event.id
                            yield event
                    yield job
                waiter.ok()
            except errors.TransientError as exc:
                waiter.transient(exc, f"job {job_id}")
                continue
            if job is not None and job.is_terminal:
                return
            if waiter.expired():
                state = job.state if job is not None else "unknown"
                raise errors.WaitTimeout(
                    f"Gave up waiting for job {job_id} after {timeout_s:g}s; it is still {state}.",
                    hint="The job keeps running remotely: `cloudtune resume RUN` or `cloudtune watch RUN` later.",
                    provider=provider.name,
                )
            waiter.interval = policy.next_interval(waiter.interval, changed, follow)
            waiter.pause(waiter.interval)
    finally:
        if stats is not None:
            stats["requests"] = stats.get("requests", 0) + waiter.requests


def wait_for_job(
    provider: "Provider",
    job_id: str,
    *,
    timeout_s: float | None = None,
    raise_on_failure: bool = False,
    on_job: Callable[[Job], None] | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    after: str | None = None,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
    policy: PollPolicy | None = None,
    stats: dict[str, int] | None = None,
) -> Job:
    """Poll until the job is terminal and return it (failed and cancelled jobs too, unless
    ``raise_on_failure``). ``on_event`` gets every new event once, in order, starting after the
    event id ``after``; ``on_job`` gets every fetched job."""
    job: Job | None = None
    for item in poll_job(
        provider, job_id, follow=on_event is not None, after=after, timeout_s=timeout_s,
        sleep=sleep, clock=clock, policy=policy, stats=stats,
    ):
        if isinstance(item, Job):
            job = item
            if on_job is not None:
                on_job(item)
        elif on_event is not None:
            on_event(item)
    assert job is not None
    if raise_on_failure and job.state.value in ("failed", "cancelled"):
        detail = f": {job.error.message}" if job.error else ""
        raise errors.JobFailed(f"Job {job_id} ended {job.state}{detail}", provider=provider.name)
    return job


def follow_events(provider: "Provider", job_id: str, **kwargs: object) -> Iterator[JobEvent]:
    """Yield each event of the job once, in order, until the job is terminal."""
    for item in poll_job(provider, job_id, follow=True, **kwargs):  # type: ignore[arg-type]
        if isinstance(item, JobEvent):
            yield item


def wait_for_deployment(
    provider: "Provider",
    name: str,
    *,
    target: str = "ready",
    timeout_s: float | None = 3600.0,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
    policy: PollPolicy | None = None,
    on_update: Callable[[Deployment], None] | None = None,
) -> Deployment | None:
    """Wait until the deployment is ``ready`` (returned) or ``deleted`` (None; not-found counts
    as deleted, like botocore's ``EndpointDeleted`` waiter). A failed deployment raises."""
    if target not in ("ready", "deleted"):
        raise ValueError("target must be 'ready' or 'deleted'")
    policy = policy or default_policy()
    waiter = _Waiter(policy, timeout_s, sleep or provider.sleep, clock or provider.clock)
    last_state: DeploymentState | None = None
    while True:
        try:
            deployment = provider.get_deployment(name)
            waiter.ok()
        except errors.NotFound:
            if target == "deleted":
                return None
            raise
        except errors.TransientError as exc:
            waiter.transient(exc, f"deployment {name}")
            continue
        if on_update is not None:
            on_update(deployment)
        if target == "ready":
            if deployment.state == DeploymentState.READY:
                return deployment
            if deployment.state in (DeploymentState.FAILED, DeploymentState.DELETED, DeploymentState.DELETING):
                detail = deployment.details.get("error") or deployment.provider_status or "no detail"
                raise errors.ProviderError(
                    f"Deployment {name} is {deployment.state} ({detail}).",
                    hint="Check the provider's portal for the reason; `cloudtune undeploy RUN` removes it.",
                    provider=provider.name,
                )
        elif deployment.state == DeploymentState.DELETED:
            return None
        if waiter.expired():
            raise errors.WaitTimeout(
                f"Deployment {name} did not become {target} within {timeout_s:g}s (it is {deployment.state}).",
                hint="Run the same command again later; nothing is lost.",
                provider=provider.name,
            )
        changed = deployment.state != last_state
        last_state = deployment.state
        waiter.interval = policy.next_interval(waiter.interval, changed, following=False)
        waiter.pause(waiter.interval)
