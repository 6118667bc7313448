"""Cleanup: delete what a run created, and nothing else.

A run's record (:class:`cloudtune.types.Resource`) says what it created; like Terraform's state,
that record - never a name or a guess - is what cleanup works from. Kubernetes-style, each
delete is preceded by a last ownership check against the provider (a deployment still serves
this run's model and carries this run's tag; a file still has this run's name), so a name that
another run or a person took over in the meantime is reported, not deleted.

:class:`Cleaner` is built on the run context (:mod:`cloudtune.run_context`) the pipeline and the
commands share; nothing here imports the pipeline.

Order: deployments and endpoints (waiting until each is gone), then the model, then files.
Cleanup has its own record (:class:`cloudtune.types.CleanupRecord`); it never moves the run's
progress, so ``resume`` can tell "done" from "deleted".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune import errors, poller
from cloudtune.provider import search_since
from cloudtune.types import (
    CLEANUP_ORDER,
    CleanupPolicy,
    CleanupRecord,
    Job,
    JobAction,
    Resource,
    ResourceKind,
    ResourceRef,
    ResourceState,
    Run,
    Step,
    Verdict,
)

if TYPE_CHECKING:
    from cloudtune.run_context import RunContext

#: how long ``cleanup --cancel`` waits for a cancelled job to reach a terminal state
CANCEL_WAIT_S = 1800.0
_ACTIVE_STATES = (ResourceState.OWNED, ResourceState.INTENDED, ResourceState.DELETING)


class JobStillActive(errors.Conflict):
    """Cleanup refused: the run's job is still running (its files are in use, its model to come)."""


def job_is_active(run: Run) -> bool:
    return bool(run.job_id) and not (run.job_state is not None and run.job_state.is_terminal)


class Cleaner:
    """Deletes what a run owns, on a :class:`~cloudtune.run_context.RunContext` (the pipeline's,
    or a command's): the run's cleanup policy, and cleanups asked for by a command."""

    def __init__(self, context: "RunContext") -> None:
        self.context = context

    def clean(self, run: Run, *, reason: str, models: bool = True, files: bool = True, cancel: bool = False,
              only: set[str] | None = None) -> CleanupRecord:
        """See :func:`run_cleanup`."""
        return run_cleanup(self.context, run, reason=reason, models=models, files=files, cancel=cancel, only=only)

    def apply_policy(self, run: Run, *, failed: bool) -> None:
        """The run's cleanup policy (``always``, or ``on-failure`` when ``failed``); skipped, with a
        warning, while its job is still active."""
        policy = run.spec.cleanup
        if policy == CleanupPolicy.ALWAYS or (policy == CleanupPolicy.ON_FAILURE and failed):
            reporter = self.context.reporter
            if job_is_active(run):
                reporter.warn(f"Cleanup (policy {policy}) skipped: job {run.job_id} is still {run.job_state}; "
                              f"`cloudtune cleanup {run.run_id} --cancel` stops it and cleans up.")
                return
            reporter.step(run, f"Cleaning up (policy {policy})")
            run_cleanup(self.context, run, reason=f"policy {policy}")

    def after_error(self, run: Run) -> None:
        """The cleanup policy after a failure: a cleanup error is reported beside the run's first
        error (kept in ``run.error``), never instead of it."""
        try:
            self.apply_policy(run, failed=True)
        except errors.CloudtuneError as exc:
            self.context.reporter.warn(f"Cleanup after the failure also failed: {exc}")
            if run.error is not None:
                run.error.cleanup_error = str(exc)
            self.context.ledger.save(run)


def run_cleanup(context: "RunContext", run: Run, *, reason: str, models: bool = True, files: bool = True,
                cancel: bool = False, only: set[str] | None = None) -> CleanupRecord:
    """Delete the run's owned resources in order. Refuses (``JobStillActive``, nothing deleted)
    while the job is active, unless ``cancel``: then the job is cancelled, waited for until it
    stops, and what it produced is deleted too. ``only`` limits it to resources with these ids
    (``undeploy NAME``). Raises the first delete error after recording it."""
    provider, reporter = context.provider, context.reporter
    record = CleanupRecord(reason=reason)
    run.cleanups.append(record)  # saved with every delete below: a cleanup killed midway keeps its record
    if only is None:
        _other_tagged_jobs(context, run, cancel=cancel)
        adopt_tagged_deployments(context, run)
    if job_is_active(run) and only is None:
        job = provider.get_job(run.job_id)  # type: ignore[arg-type]
        context.note_job(run, job)
        if not job.is_terminal:
            if not cancel:
                raise JobStillActive(
                    f"Run {run.run_id}'s job {run.job_id} is still {job.state}: cleaning up now would delete files "
                    "under a running job and leave the model it produces behind. Nothing was deleted.",
                    hint=f"`cloudtune cleanup {run.run_id} --cancel` cancels the job, waits until it stops, then "
                         "deletes in order; or wait for it (`cloudtune resume`).",
                )
            reporter.step(run, f"Cancelling job {run.job_id} before cleaning up")
            context.job_call(run, JobAction.CANCEL)
            job = poller.wait_for_job(provider, run.job_id, timeout_s=CANCEL_WAIT_S,  # type: ignore[arg-type]
                                      sleep=context.sleep, clock=context.clock)
            if job.state.value in ("cancelled", "failed") and run.status in ("active", "timed_out", "interrupted"):
                # the run ended here: `list` must not keep saying it timed out or is still going
                run.status = job.state.value
            context.note_job(run, job)
    try:
        for kind in CLEANUP_ORDER:
            if kind == ResourceKind.MODEL and not models:
                continue
            if kind in (ResourceKind.FILE, ResourceKind.DATA_ASSET) and not files:
                continue
            for resource in [r for r in run.resources if r.kind == kind and r.state in _ACTIVE_STATES
                             and (only is None or (r.id or r.name) in only)]:
                _delete_one(context, run, resource, record)
    finally:
        context.ledger.save(run)
        _report(context, run, record)
    return record


def _other_tagged_jobs(context: "RunContext", run: Run, *, cancel: bool) -> None:
    """Jobs beside the run's own that carry its tag (two runners drove it, or another tool made
    one) are the run's too: their models are recorded so that this cleanup
    deletes them. An active one is refused like the run's own job, or cancelled with ``cancel``."""
    if not run.job_id:
        return  # no job of its own yet: the pipeline's look for one (find_jobs) decides, not cleanup
    others = [job for job in context.provider.find_jobs(run.run_id) if job.id != run.job_id]
    for job in others:
        run.record(ResourceKind.JOB, ResourceState.OWNED, id=job.id, name=run.run_id,
                   ).note = "another job carrying this run's tag"
        if not job.is_terminal:
            if not cancel:
                context.ledger.save(run)
                raise JobStillActive(
                    f"Job {job.id}, which also carries run {run.run_id}'s tag, is still {job.state}. Nothing was deleted.",
                    hint=f"`cloudtune cleanup {run.run_id} --cancel` cancels it, waits until it stops, then deletes.")
            context.reporter.step(run, f"Cancelling job {job.id} (it also carries this run's tag)")
            context.record_call(run, "cancel_job", lambda job_id=job.id: context.provider.cancel_job(job_id),
                                 job_id=job.id)
            job = poller.wait_for_job(context.provider, job.id, timeout_s=CANCEL_WAIT_S,
                                      sleep=context.sleep, clock=context.clock)
        if job.fine_tuned_model and not run.resource(ResourceKind.MODEL, id=job.fine_tuned_model):
            run.record(ResourceKind.MODEL, ResourceState.OWNED, id=job.fine_tuned_model)
    context.ledger.save(run)


def adopt_tagged_deployments(context: "RunContext", run: Run) -> list[str]:
    """Deployments of the run's model that carry the run's tag but are not in this ledger (another
    machine's ``resume`` deployed them) are recorded as the run's, so that
    ``cleanup`` and ``undeploy`` delete them. Only the tag counts: a name proves nothing."""
    provider = context.provider
    if not run.fine_tuned_model or not provider.supports("list_deployments"):
        return []
    adopted = []
    for deployment in provider.list_deployments(run.fine_tuned_model):
        if deployment.run_id != run.run_id or str(deployment.state) in ("deleting", "deleted"):
            continue
        known = run.resource(ResourceKind.DEPLOYMENT, id=deployment.name)
        if known is not None and known.state in _ACTIVE_STATES:
            continue
        run.record(ResourceKind.DEPLOYMENT, ResourceState.OWNED, id=deployment.name, name=deployment.name,
                   model=deployment.model).note = "found at the service by its run tag"
        adopted.append(deployment.name)
    if adopted:
        context.ledger.save(run)
    return adopted


def _report(context: "RunContext", run: Run, record: CleanupRecord) -> None:
    context.reporter.step(run, "Cleanup: " + record.summary())


def _delete_one(context: "RunContext", run: Run, resource: Resource, record: CleanupRecord) -> None:
    verdict, why = ownership(context, run, resource)
    if verdict == Verdict.GONE:
        resource.state = ResourceState.DELETED
        resource.note = why
        record.gone.append(resource.ref)
        context.ledger.save(run)
        return
    if verdict == Verdict.FOREIGN:
        resource.state = ResourceState.FOREIGN
        resource.note = why
        record.skipped.append(ResourceRef.of(resource.kind, resource.ref.id, why))
        context.ledger.save(run)
        context.reporter.warn(f"Not deleting {resource.ref}: {why}.")
        return
    resource.state = ResourceState.DELETING
    context.ledger.save(run)
    try:
        _delete(context, run, resource)
    except errors.CloudtuneError as exc:
        record.errors.append(f"{resource.ref}: {exc}")
        raise
    resource.state = ResourceState.DELETED
    resource.note = None
    record.deleted.append(resource.ref)
    context.ledger.save(run)


def _delete(context: "RunContext", run: Run, resource: Resource) -> None:
    provider, ident = context.provider, resource.id or resource.name
    assert ident is not None
    if resource.kind in (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT):
        context.record_call(run, "undeploy", lambda: provider.undeploy(ident), name=ident)
        poller.wait_for_deployment(provider, ident, target="deleted", timeout_s=run.spec.timeout_s or 3600.0,
                                   sleep=context.sleep, clock=context.clock)
    elif resource.kind == ResourceKind.MODEL:
        context.record_call(run, "delete_model", lambda: provider.delete_model(ident), model=ident)
    elif resource.kind in (ResourceKind.FILE, ResourceKind.DATA_ASSET):
        context.record_call(run, "delete_file", lambda: provider.delete_file(ident), file_id=ident)


def ownership(context: "RunContext", run: Run, resource: Resource) -> tuple[Verdict, str | None]:
    """Ask the provider, right before a delete, whether ``resource`` is still this run's:
    ``(Verdict.OURS, None)``, ``(Verdict.GONE, why)`` or ``(Verdict.FOREIGN, why)``."""
    provider = context.provider
    if resource.kind in (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT):
        name = resource.id or resource.name
        try:
            current = provider.get_deployment(name)  # type: ignore[arg-type]
        except errors.NotFound:
            return Verdict.GONE, "not found"
        if str(current.state) == "deleted":
            return Verdict.GONE, "deleted"
        expected = resource.model or run.fine_tuned_model
        if expected and current.model != expected:
            return Verdict.FOREIGN, f"now serves {current.model}, not this run's {expected}"
        if current.run_id is not None and current.run_id != run.run_id:
            return Verdict.FOREIGN, f"tagged with run {current.run_id}"
        if resource.state == ResourceState.INTENDED and current.run_id is None and not expected:
            return Verdict.FOREIGN, "cannot tell whether this run created it"
        resource.id = resource.id or name
        return Verdict.OURS, None
    if resource.kind == ResourceKind.MODEL:
        job_ids = [r.id for r in run.resources if r.kind == ResourceKind.JOB and r.id and r.state == ResourceState.OWNED]
        produced = []
        for job_id in dict.fromkeys([*([run.job_id] if run.job_id else []), *job_ids]):
            try:
                job: Job = provider.get_job(job_id)
            except errors.NotFound:
                return Verdict.OURS, None  # the job record is gone; the model id came from it
            if job.fine_tuned_model == resource.id:
                return Verdict.OURS, None
            if job.fine_tuned_model:
                produced.append(job.fine_tuned_model)
        if produced:
            return Verdict.FOREIGN, f"this run's job produced {', '.join(produced)}"
        return Verdict.OURS, None
    if resource.kind in (ResourceKind.FILE, ResourceKind.DATA_ASSET):
        if resource.id is None:  # an upload whose answer never came back: find it by its run-tagged name
            found = find_tagged_upload(context, run, resource)
            if found is None:
                return Verdict.GONE, "never stored"
            resource.id = found
            return Verdict.OURS, None
        if not provider.supports("get_file"):
            return Verdict.OURS, None
        try:
            remote = provider.get_file(resource.id)
        except errors.NotFound:
            return Verdict.GONE, "not found"
        except errors.UnsupportedOperation:
            return Verdict.OURS, None
        if resource.name and remote.name and remote.name != resource.name:
            return Verdict.FOREIGN, f"named {remote.name}, not this run's {resource.name}"
        return Verdict.OURS, None
    return Verdict.OURS, None


def find_tagged_upload(context: "RunContext", run: Run, resource: Resource) -> str | None:
    """The id of the file this run uploaded under its tagged name, or ``None``."""
    if not resource.name:
        return None
    path = Path(context.workdir or ".") / resource.name
    if not path.exists():
        return None
    return context.provider.find_uploaded(path, since=search_since(run.created_at.timestamp()))


def delete_model_safely(
    provider: Any,
    model: str,
    *,
    reporter: Any = lambda message: None,
    include_unmanaged: bool = False,
    timeout_s: float = 3600.0,
    missing_ok: bool = False,
) -> list[ResourceRef]:
    """``cloudtune delete-model MODEL``: list the model's deployments, delete each and wait until
    it is gone, then delete the model. Deployments cloudtune did not create stop everything
    unless ``include_unmanaged``: nothing is deleted before that is known. A model that does not
    exist is a :class:`NotFound` (a misspelt id is not "deleted")."""
    deployments = provider.list_deployments(model)
    foreign = [d.name for d in deployments if not d.managed_by_cloudtune]
    if foreign and not include_unmanaged:
        raise errors.Conflict(
            f"Model {model} is also deployed outside cloudtune as {', '.join(foreign)}; nothing was deleted.",
            hint="Delete those deployments yourself, or pass --include-unmanaged to delete them too.",
            provider=provider.name,
        )
    deleted = []
    for deployment in deployments:
        reporter(f"Deleting deployment {deployment.name}")
        provider.undeploy(deployment.name)
        poller.wait_for_deployment(provider, deployment.name, target="deleted", timeout_s=timeout_s)
        deleted.append(ResourceRef.of(ResourceKind.DEPLOYMENT, deployment.name))
    reporter(f"Deleting model {model}")
    provider.delete_model(model, missing_ok=missing_ok)
    deleted.append(ResourceRef.of(ResourceKind.MODEL, model))
    return deleted


def settle_interrupted_deletes(context: "RunContext", run: Run) -> list[str]:
    """Ask the provider about every resource whose delete was sent but never answered (state
    ``deleting``: the process died or lost the answer). Gone -> ``deleted`` (counted as gone in the
    cleanup that sent it); still there -> ``owned`` again (the delete did not happen; ``cleanup``
    sends it again); the provider cannot tell -> left ``deleting``, which ``resume`` never reports
    as finished. Returns a line per change; the caller holds the run's lock and saves."""
    changed: list[str] = []
    for resource in [r for r in run.resources if r.state == ResourceState.DELETING]:
        exists = _still_exists(context.provider, resource)
        if exists is None:
            continue
        if exists:
            resource.state, resource.note = ResourceState.OWNED, "a delete was sent but did not happen"
            changed.append(f"{resource.ref} still exists")
            continue
        resource.state, resource.note = ResourceState.DELETED, "deleted; the answer to the delete was lost"
        if not run.cleanups:  # a ledger written before cleanups were recorded up front
            run.cleanups.append(CleanupRecord(reason="an interrupted cleanup"))
        run.cleanups[-1].gone.append(resource.ref)  # the cleanup that sent the delete
        changed.append(f"{resource.ref} was deleted")
    return changed


def _still_exists(provider: Any, resource: Resource) -> bool | None:
    ident = resource.id or resource.name
    if ident is None:
        return None
    try:
        if resource.kind == ResourceKind.MODEL:
            return provider.model_exists(ident)
        if resource.kind in (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT):
            return str(provider.get_deployment(ident).state) not in ("deleting", "deleted")
        if resource.kind in (ResourceKind.FILE, ResourceKind.DATA_ASSET) and provider.supports("get_file"):
            provider.get_file(ident)
            return True
    except errors.NotFound:
        return False
    except errors.UnsupportedOperation:
        return None
    return None


def undone_by_cleanup(run: Run) -> str | None:
    """Why ``resume`` cannot report ``run`` as finished - its model was deleted by a cleanup, or a
    delete of it was sent and nobody knows whether it happened - or ``None``. A finished run whose
    own ``--cleanup always`` policy deleted the model did what it was asked; a model deleted by a
    later ``cloudtune cleanup`` (or a failed run's policy) was undone."""
    model = run.resource(ResourceKind.MODEL, id=run.fine_tuned_model) if run.fine_tuned_model else None
    if model is not None and model.state == ResourceState.DELETING:
        return f"a delete of its model {run.fine_tuned_model} was sent, and the provider cannot say whether it happened"
    if model is None or model.state != ResourceState.DELETED:
        return None
    when = next((c for c in reversed(run.cleanups) if model.ref in c.deleted or model.ref in c.gone), None)
    if run.step == Step.DONE and when is not None and when.reason == "policy always":
        return None
    how = f" by a cleanup ({when.reason}, {when.at:%Y-%m-%d %H:%M} UTC)" if when else ""
    return f"its model {run.fine_tuned_model} was deleted{how}"
