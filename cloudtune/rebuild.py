"""Rebuild a run's record from the provider, for a machine whose ledger never saw the run.

CI runners are ephemeral: the ledger that started a run may be gone when ``cloudtune resume RUN``
runs on the next runner. Every remote resource carries the run id (the job's metadata, the
uploaded file's name, the deployment's tag), so the record can be rebuilt by asking the provider
what carries the tag - never by name or size alone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cloudtune import errors
from cloudtune.provider import search_since
from cloudtune.types import FineTuneSpec, ResourceKind, ResourceState, Run, Step, utcnow

from cloudtune.run_context import deployment_name
from cloudtune.uploads import Uploader

if TYPE_CHECKING:
    from cloudtune.run_context import RunContext


def started_at(run_id: str) -> datetime:
    """A run id starts with its UTC start time (``YYYYmmdd-HHMMSS-xxxxxx``)."""
    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return utcnow()


def rebuild_run(context: "RunContext", spec: FineTuneSpec, run_id: str) -> tuple[Run, list[str]]:
    """A :class:`Run` holding what the provider has that carries ``run_id``, and a line per
    finding. Nothing is created or deleted; the caller decides whether to save it."""
    provider = context.provider
    uploader = Uploader(context)
    run = Run(run_id=run_id, spec=spec, provider=spec.provider, created_at=started_at(run_id))
    found: list[str] = []
    since = search_since(run.created_at.timestamp())
    for role, source in uploader.data_files(run):
        copy = uploader.upload_copy(run, role, source)
        file_id = provider.find_uploaded(copy, since=since)
        if file_id:
            run.record(ResourceKind.FILE, ResourceState.OWNED, id=file_id, name=copy.name, role=role)
            setattr(run, f"{role}_file_id", file_id)
            found.append(f"{role} file {file_id} ({copy.name})")
    if run.training_file_id:
        run.step = Step.UPLOADED
    jobs = provider.find_jobs(run_id)
    if len(jobs) > 1:
        raise errors.SeveralJobsForRun.listing(run_id, jobs)
    if jobs:
        job = jobs[0]
        run.job_id, run.job_state, run.step = job.id, job.state, Step.JOB_CREATED
        run.record(ResourceKind.JOB, ResourceState.OWNED, id=job.id, name=run_id)
        found.append(f"job {job.id} ({job.state})")
        if job.is_terminal:
            run.step = Step.JOB_FINISHED
        if job.fine_tuned_model:
            run.fine_tuned_model = job.fine_tuned_model
            if provider.model_exists(job.fine_tuned_model) is False:  # the job remembers a model deleted since
                run.record(ResourceKind.MODEL, ResourceState.DELETED, id=job.fine_tuned_model,
                           note="no longer on the service")
                found.append(f"model {job.fine_tuned_model} (deleted: no longer on the service)")
            else:
                run.record(ResourceKind.MODEL, ResourceState.OWNED, id=job.fine_tuned_model)
                found.append(f"model {job.fine_tuned_model}")
                _deployments(provider, run, job.fine_tuned_model, found)
    if not found:
        raise errors.NotFound(
            f"Run {run_id} is not in this machine's ledger, and the {spec.provider} provider has nothing tagged "
            "with it (no job, file or deployment).",
            hint="Check the run id and --provider; `cloudtune run` starts a new run.",
        )
    return run, found


def _deployments(provider: Any, run: Run, model: str, found: list[str]) -> None:
    """Only a deployment tagged with the run is the run's. One that merely has the run's default
    name (a person can make one) is recorded ``foreign``: never deleted by this run (issue 16
    point 4). A service without tags has nothing to prove ownership with on a fresh machine, so
    nothing of it is adopted."""
    if not provider.supports("list_deployments"):
        return
    for deployment in provider.list_deployments(model):
        if deployment.run_id == run.run_id:
            run.record(ResourceKind.DEPLOYMENT, ResourceState.OWNED, id=deployment.name, name=deployment.name,
                       model=deployment.model)
            found.append(f"deployment {deployment.name}")
            run.step = Step.DEPLOYED
        elif deployment.name == deployment_name(run):
            run.record(ResourceKind.DEPLOYMENT, ResourceState.FOREIGN, id=deployment.name, name=deployment.name,
                       model=deployment.model).note = "has this run's name but not its tag; not created by it"
            found.append(f"deployment {deployment.name} (not this run's: no run tag)")
