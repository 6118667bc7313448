"""The bottom floor every step that works on a run stands on: what it needs (state, provider,
reporter, clock, sleep, work directory) and the small recorder every remote step goes through.

:class:`RunContext` knows nothing of pipelines, uploads or cleanups; :class:`cloudtune.pipeline.Pipeline`
is one, and builds its :class:`cloudtune.uploads.Uploader` and :class:`cloudtune.cleanup.Cleaner`
on it, so neither reaches into another's attributes and no module imports the one above it.

The recorder keeps the rule that makes runs resumable: an intent is written to the ledger before
a remote call and a result or error after it (:meth:`RunContext.record_call`); the run keeps the
provider's view of its job (:meth:`RunContext.note_job`); progress only moves forward
(:meth:`RunContext.advance`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cloudtune import errors
from cloudtune.types import Deployment, Job, JobAction, JobEvent, JobState, ResourceKind, ResourceState, Run, Step

if TYPE_CHECKING:
    from cloudtune.state import StateStore
    from cloudtune.provider import Provider


class Reporter(Protocol):
    def step(self, run: Run, message: str) -> None: ...
    def job(self, run: Run, job: Job) -> None: ...
    def event(self, run: Run, event: JobEvent) -> None: ...
    def deployment(self, run: Run, deployment: Deployment) -> None: ...
    def warn(self, message: str) -> None: ...


class SilentReporter:
    def step(self, run: Run, message: str) -> None: ...
    def job(self, run: Run, job: Job) -> None: ...
    def event(self, run: Run, event: JobEvent) -> None: ...
    def deployment(self, run: Run, deployment: Deployment) -> None: ...
    def warn(self, message: str) -> None: ...


def deployment_name(run: Run) -> str:
    """The name the run's deployment gets unless its spec names one."""
    return run.spec.deploy.name or f"ct-{run.run_id}".lower()


class RunContext:
    """State, provider, reporter, clock, sleep and work directory of the steps on a run, and the
    recorder they share. The caller holds the run's lock (:class:`cloudtune.locks.RunLock`)."""

    def __init__(
        self,
        ledger: "StateStore",
        provider: "Provider",
        reporter: Reporter | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.reporter: Any = reporter or SilentReporter()
        self.sleep = sleep or provider.sleep
        self.clock = clock or provider.clock
        self.workdir = workdir

    # ------------------------------------------------------------ the recorder
    def advance(self, run: Run, step: Step) -> None:
        """Record that ``run`` reached ``step`` (progress never moves back) and save it."""
        if step.order > run.step.order:
            run.step = step
        self.ledger.save(run)

    def note_job(self, run: Run, job: Job) -> None:
        """Keep the run's view of its job (and the model it produced) current."""
        run.job_state = job.state
        if job.fine_tuned_model:
            run.fine_tuned_model = job.fine_tuned_model
            if job.state == JobState.SUCCEEDED or job.is_terminal:
                run.record(ResourceKind.MODEL, ResourceState.OWNED, id=job.fine_tuned_model)
        self.ledger.save(run)

    def record_call(self, run: Run, action: str, call: Callable[[], Any], **data: Any) -> Any:
        """Make one remote call between an intent and its result (or error) in the ledger."""
        intent = self.ledger.intent(run.run_id, action, **data)
        try:
            result = call()
        except BaseException as exc:
            detail = exc.to_dict() if isinstance(exc, errors.CloudtuneError) else {"type": type(exc).__name__}
            self.ledger.result(run.run_id, action, intent, phase="error", error=detail)
            raise
        self.ledger.result(run.run_id, action, intent, value=result if isinstance(result, str) else None)
        return result

    def job_call(self, run: Run, action: JobAction | str) -> Job:
        """Cancel, pause or resume the run's job, through the ledger; the run keeps the state the
        provider answered with."""
        action = JobAction(action)
        if not run.job_id:
            raise errors.InvalidInput(f"Run {run.run_id} has no job to {action.verb}.")
        job_id = run.job_id
        calls: dict[JobAction, Callable[[str], Job]] = {
            JobAction.CANCEL: self.provider.cancel_job,
            JobAction.PAUSE: self.provider.pause_job,
            JobAction.RESUME: self.provider.resume_job,
        }
        job = self.record_call(run, action.value, lambda: calls[action](job_id), job_id=job_id)
        self.note_job(run, job)
        return job


__all__ = ["Reporter", "RunContext", "SilentReporter", "deployment_name"]
