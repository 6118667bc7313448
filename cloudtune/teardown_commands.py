"""The commands that stop or remove what a run made: ``cancel``, ``undeploy``, ``delete-model``,
``cleanup``. Each takes the run's lock (see :mod:`cloudtune.locks`) and deletes only what the
run's record says it owns (see :mod:`cloudtune.cleanup`)."""

from __future__ import annotations

import argparse
import os
import sys

from cloudtune import errors, poller
from cloudtune.cleanup import adopt_tagged_deployments, delete_model_safely, job_is_active, run_cleanup
from cloudtune.command_helpers import finish, interruptible, load_run, locked_run, wait_lock_s
from cloudtune.config import parse_duration, parse_options
from cloudtune.locks import RunLock, is_locked_elsewhere
from cloudtune.output import choose_mode, emit_json, make_reporter, run_document, say
from cloudtune.pipeline import Pipeline, provider_for
from cloudtune.state import describe_unreadable, open_state
from cloudtune.types import JobAction, ResourceKind, ResourceRef, ResourceState, Run


def cmd_cancel(args: argparse.Namespace) -> int:
    _, listed = load_run(args.run_id)
    if getattr(args, "wait_lock", None) is None and is_locked_elsewhere(listed.run_id):
        return _cancel_driven_elsewhere(args, listed)
    with locked_run(args, listed.run_id) as (ledger, run), provider_for(run) as provider:
        if not run.job_id:
            raise errors.InvalidInput(f"Run {run.run_id} has no job to cancel.")
        current = provider.get_job(run.job_id)
        if current.is_terminal:
            # nothing to cancel: the run keeps the state it has
            message = f"job {current.id} already ended {current.state}; nothing was cancelled"
            if args.json:
                emit_json(run_document(run, message=message))
            else:
                say(message, sys.stdout)
            return 0
        job = Pipeline(ledger, provider).job_call(run, JobAction.CANCEL)
        run.status = "cancelled"
        ledger.save(run)
    if args.json:
        emit_json(run_document(run))
    else:
        say(f"job {job.id}: {job.state}", sys.stdout)
    return 0


def _cancel_driven_elsewhere(args: argparse.Namespace, run: Run) -> int:
    """Stopping a job that another process is waiting on is what ``cancel`` is for, so the cancel
    is sent to the provider; the run's record is left to the process that drives it (it sees the
    job end and records it), so the one-writer rule holds."""
    if not run.job_id:
        raise errors.RunLocked(f"Run {run.run_id} is being driven by another process and has no job yet.",
                               hint="Let it create the job, or interrupt that process (Ctrl-C).")
    holder = RunLock(run.run_id).holder()
    with provider_for(run) as provider:
        current = provider.get_job(run.job_id)
        job = current if current.is_terminal else provider.cancel_job(run.job_id)
    message = (f"job {job.id}: {job.state}; run {run.run_id} is driven by {holder}, which records the outcome"
               if not current.is_terminal else f"job {current.id} already ended {current.state}; nothing was cancelled")
    if args.json:
        emit_json({**run_document(run), "state": str(job.state), "message": message})
    else:
        say(message, sys.stdout)
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    with locked_run(args) as (ledger, run):
        reporter = make_reporter(choose_mode(args.json))
        with provider_for(run) as provider:  # deployments another machine made for this run count too
            adopt_tagged_deployments(Pipeline(ledger, provider, reporter), run)
        names = [args.name] if getattr(args, "name", None) else list(run.deployment_names)
        if not names or not set(names) & set(run.deployment_names):
            reporter.close()
            message = (f"run {run.run_id} owns no deployment named {args.name}" if getattr(args, "name", None)
                       else f"run {run.run_id} has no deployment of its own") + "; nothing was deleted"
            if args.json:
                emit_json(run_document(run, message=message))
            else:
                say(message, sys.stdout)
            return 0
        with provider_for(run) as provider, interruptible():
            run_cleanup(Pipeline(ledger, provider, reporter), run, reason="cloudtune undeploy", models=False,
                        files=False, only=set(names))
        return finish(args, run, reporter)


def cmd_delete_model(args: argparse.Namespace) -> int:
    from cloudtune import registry

    model, provider_name, options = args.model, args.provider, parse_options(args.option)
    run = _run_owning_model(model)  # the run records the delete, under its lock (issue 16 point 5)
    by_model_id = run is not None
    if run is None and not provider_name:
        try:
            _, run = load_run(args.model)
        except errors.InvalidInput:
            run = None
        if run is None and not os.environ.get("CLOUDTUNE_PROVIDER"):
            # deletes are idempotent, so guessing the provider would "succeed" on the wrong one
            raise errors.InvalidInput(
                f"{args.model!r} is not a run id; say which provider holds this model.",
                hint=f"cloudtune delete-model {args.model} --provider openai|azure|local",
            )
    if run is not None:
        with locked_run(args, run.run_id) as (ledger, run), provider_for(run) as provider, interruptible():
            if not run.fine_tuned_model:
                raise errors.InvalidInput(f"Run {run.run_id} has no fine-tuned model.")
            model = model if by_model_id else run.fine_tuned_model
            deleted = _delete_run_model(args, Pipeline(ledger, provider), run, model, by_id=by_model_id)
    else:
        with registry.get_provider(provider_name, options) as provider, interruptible():
            try:
                deleted = delete_model_safely(
                    provider, model, reporter=lambda m: None if args.json else say(m),
                    include_unmanaged=args.include_unmanaged, missing_ok=False,
                )
            except errors.NotFound as exc:  # the id the user typed names nothing: invalid input (exit 2)
                raise errors.InvalidInput(
                    f"There is no model {model!r} to delete on {provider.name}: {exc}", provider=provider.name,
                    hint="Check the id: `cloudtune list` shows the models your runs made.",
                ) from exc
    if args.json:
        emit_json({"model": model, "deleted": deleted, "run_id": run.run_id if run else None})
    else:
        say("deleted " + (", ".join(deleted) or "nothing"), sys.stdout)
    return 0


def _delete_run_model(args: argparse.Namespace, pipeline: Pipeline, run: Run, model: str, *,
                      by_id: bool) -> list[str]:
    """``delete-model`` of a model a run in this ledger made: deployments made outside the run stop
    everything (unless --include-unmanaged) before anything is deleted; then the run's own
    deployments of it and the model go through the run's cleanup, so the run records the delete."""
    provider = pipeline.provider
    adopt_tagged_deployments(pipeline, run)
    recorded = run.resource(ResourceKind.MODEL, id=model)
    if by_id and recorded is not None and recorded.state in (ResourceState.DELETED, ResourceState.FOREIGN):
        raise errors.InvalidInput(f"There is no model {model!r} to delete: run {run.run_id} records it as "
                                  f"{recorded.state}" + (f" ({recorded.note})" if recorded.note else "") + ".",
                                  hint="`cloudtune status RUN` shows what the run made and what is left of it.")
    ours = {r.id or r.name for r in run.resources if r.kind in (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT)
            and r.state in (ResourceState.OWNED, ResourceState.INTENDED, ResourceState.DELETING)}
    others = [d for d in (provider.list_deployments(model) if provider.supports("list_deployments") else [])
              if d.name not in ours and d.run_id != run.run_id and str(d.state) not in ("deleting", "deleted")]
    if others and not args.include_unmanaged:
        raise errors.Conflict(
            f"Model {model} is also deployed outside run {run.run_id} as {', '.join(d.name for d in others)}; "
            "nothing was deleted.",
            hint="Delete those deployments yourself, or pass --include-unmanaged to delete them too.",
            provider=provider.name)
    deleted = []
    for deployment in others:
        provider.undeploy(deployment.name)
        poller.wait_for_deployment(provider, deployment.name, target="deleted", timeout_s=3600.0,
                                   sleep=pipeline.sleep, clock=pipeline.clock)
        deleted.append(ResourceRef.of(ResourceKind.DEPLOYMENT, deployment.name))
    serving = {r.id or r.name or "" for r in run.resources
               if r.kind in (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT) and r.model == model}
    record = run_cleanup(pipeline, run, reason="cloudtune delete-model", files=False, only={model, *serving})
    if by_id and ResourceRef.of(ResourceKind.MODEL, model) in record.gone:
        raise errors.InvalidInput(f"There is no model {model!r} to delete on {provider.name}: it was already gone "
                                  f"(recorded in run {run.run_id}).")
    return deleted + record.deleted


def _run_owning_model(model: str) -> Run | None:
    """The run in this ledger that made ``model`` (its fine-tuned model, or a model it recorded)."""
    for run in open_state().list_runs(limit=100_000):
        if run.fine_tuned_model == model or run.resource(ResourceKind.MODEL, id=model) is not None:
            return run
    return None


def cmd_cleanup(args: argparse.Namespace) -> int:
    selected_by_age = args.older_than is not None
    if selected_by_age and args.run_id is not None:
        raise errors.InvalidInput(
            f"Give a run id or --older-than, not both: `cleanup {args.run_id} --older-than {args.older_than}` "
            "would not say whether the run or every old run is meant. Nothing was deleted.",
            hint="`cloudtune cleanup RUN` cleans one run; `cloudtune cleanup --older-than D` every run older than D.",
        )
    ledger = open_state()
    if selected_by_age:
        runs = ledger.list_runs(limit=10_000, older_than_s=parse_duration(args.older_than))
    elif args.run_id is not None or ledger.latest_run_id():
        runs = [ledger.get_run(ledger.latest_run_id() if args.run_id is None else args.run_id)]  # type: ignore[arg-type]
    else:
        runs = []
    reporter = make_reporter(choose_mode(args.json))
    for line in describe_unreadable(ledger.unreadable):
        reporter.warn(line)
    results, code = [], 0
    for listed in runs:
        try:
            with RunLock(listed.run_id, wait_s=wait_lock_s(args)):
                run = ledger.get_run(listed.run_id)
                with provider_for(run) as provider, interruptible():
                    pipeline = Pipeline(ledger, provider, reporter)
                    if selected_by_age and job_is_active(run):  # the ledger's state may be stale: ask
                        pipeline.note_job(run, provider.get_job(run.job_id))  # type: ignore[arg-type]
                    if selected_by_age and job_is_active(run) and not args.cancel:
                        results.append({"run_id": run.run_id, "ok": True, "deleted": [],
                                        "skipped": f"job {run.job_id} still {run.job_state}"})
                        continue
                    record = run_cleanup(pipeline, run, reason="cloudtune cleanup",
                                         models=not args.keep_model, cancel=args.cancel)
            results.append({"run_id": run.run_id, "deleted": record.deleted, "gone": record.gone,
                            "left_alone": record.skipped, "ok": True})
        except errors.CloudtuneError as exc:
            if isinstance(exc, errors.Interrupted) or (not selected_by_age and isinstance(exc, errors.RunLocked)):
                raise
            code = code or errors.exit_code_for(exc)
            results.append({"run_id": listed.run_id, "ok": False, "error": exc.to_dict()})
            reporter.warn(f"{listed.run_id}: {exc}" + (f" ({exc.hint})" if exc.hint else ""))
    reporter.close()
    if args.json:
        emit_json({"runs": results, "run_id": runs[0].run_id if len(runs) == 1 else None})
    else:
        for r in results:
            if not r["ok"]:
                text = f"not cleaned up: {r['error']['message']}"
            elif r.get("skipped"):
                text = f"skipped: {r['skipped']} (`cloudtune cleanup {r['run_id']} --cancel` stops it first)"
            else:
                text = ", ".join(r["deleted"]) or "nothing left to delete"
                if r.get("left_alone"):
                    text += "; left alone (not this run's): " + ", ".join(r["left_alone"])
            say(f"{r['run_id']}: {text}", sys.stdout)
        if not results:
            say("no runs to clean up", sys.stdout)
    return code
