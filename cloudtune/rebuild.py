"""Rebuild a run's record from the provider, for a machine whose ledger never saw the run.

CI runners are ephemeral: the ledger that started a run may be gone when ``cloudtune resume RUN``
runs on the next runner. Every remote resource carries the run id (the job's metadata, the
uploaded file's name, the deployment's tag), so the record can be rebuilt by asking the provider
what carries the tag - never by name or size alone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cloudtune import errors
from cloudtune.provider import search_since
from cloudtune.types import FineTuneSpec, ResourceKind, ResourceState, Run, Step, utcnow

if TYPE_CHECKING:
    from cloudtune.pipeline import Pipeline


def started_at(run_id: str) -> datetime:
    """A run id starts with its UTC start time (``YYYYmmdd-HHMMSS-xxxxxx``)."""
    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return utcnow()


def rebuild_run(pipeline: "Pipeline", spec: FineTuneSpec, run_id: str) -> tuple[Run, list[str]]:
    """A :class:`Run` holding what the provider has that carries ``run_id``, and a line per
    finding. Nothing is created or deleted; the caller decides whether to save it."""
    from cloudtune.pipeline import deployment_name

    provider = pipeline.provider
    run = Run(run_id=run_id, spec=spec, provider=spec.provider, created_at=started_at(run_id))
    found: list[str] = []
    since = search_since(run.created_at.timestamp())
    for role, source in pipeline.data_files(run):
        copy = pipeline.upload_copy(run, role, source)
        file_id = provider.find_uploaded(copy, since=since)
        if file_id:
            run.record(ResourceKind.FILE, ResourceState.OWNED, id=file_id, name=copy.name, role=role)
            setattr(run, f"{role}_file_id", file_id)
            found.append(f"{role} file {file_id} ({copy.name})")
    if run.training_file_id:
        run.step = Step.UPLOADED
    jobs = provider.find_jobs(run_id)
    if jobs:
        job = jobs[0]
        run.job_id, run.job_state, run.step = job.id, job.state, Step.JOB_CREATED
        run.record(ResourceKind.JOB, ResourceState.OWNED, id=job.id, name=run_id)
        found.append(f"job {job.id} ({job.state})")
        if job.fine_tuned_model:
            run.fine_tuned_model = job.fine_tuned_model
            run.record(ResourceKind.MODEL, ResourceState.OWNED, id=job.fine_tuned_model)
            found.append(f"model {job.fine_tuned_model}")
        if job.is_terminal:
            run.step = Step.JOB_FINISHED
        if job.fine_tuned_model and provider.supports("list_deployments"):
            for deployment in provider.list_deployments(job.fine_tuned_model):
                tagged = deployment.run_id == run_id
                named = deployment.run_id is None and deployment.name == deployment_name(run)
                if tagged or named:
                    run.record(ResourceKind.DEPLOYMENT, ResourceState.OWNED, id=deployment.name,
                               name=deployment.name, model=deployment.model)
                    found.append(f"deployment {deployment.name}")
                    run.step = Step.DEPLOYED
    if not found:
        raise errors.NotFound(
            f"Run {run_id} is not in this machine's ledger, and the {spec.provider} provider has nothing tagged "
            "with it (no job, file or deployment).",
            hint="Check the run id and --provider; `cloudtune run` starts a new run.",
        )
    return run, found
