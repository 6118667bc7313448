"""The pipeline: validate -> upload -> create job -> wait -> deploy -> smoke test ->
evaluate, then the cleanup policy, with every remote step written to the ledger before it
is sent and every remote resource recorded with its ownership state (:mod:`cloudtune.cleanup`
deletes only what that record says the run owns).

``run`` and ``resume`` are the same code: each step looks at the run's recorded
state and skips what is done. Uploads and job creation are the calls whose outcome can be
unknown (the request went out, the answer did not come back): before repeating either,
the provider is asked for what carries the run's tag (the run-tagged file name; the run id
in the job's metadata), so a run never uploads twice or makes a second job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudtune import errors, poller, registry
from cloudtune.cleanup import Cleaner, delete_model_safely, undone_by_cleanup
from cloudtune.costs import before_upload
from cloudtune.state import StateStore
from cloudtune.provider import Provider
from cloudtune.run_context import Reporter, RunContext, SilentReporter, deployment_name
from cloudtune.types import (
    FineTuneSpec,
    Job,
    JobAction,
    JobEvent,
    JobState,
    ResourceKind,
    ResourceRef,
    ResourceState,
    Run,
    RunError,
    Step,
)
from cloudtune.uploads import (
    DEFAULT_VALIDATION_SPLIT,
    Uploader,
    split_for_run,
    upload_name,
    validate_for_run,
)

CREATE_ATTEMPTS = 4


def provider_for(run_or_spec: Run | FineTuneSpec, **kwargs: Any) -> Provider:
    spec = run_or_spec.spec if isinstance(run_or_spec, Run) else run_or_spec
    if isinstance(run_or_spec, Run):
        _refuse_another_machines_run(run_or_spec)
    options = {**spec.provider_options, "base_model": spec.base_model}
    return registry.get_provider(spec.provider, options, **kwargs)


def _refuse_another_machines_run(run: Run) -> None:
    """A provider that is not hosted (the local backend) keeps a run's files, job and adapters on
    the machine that made them; from another machine sharing the state that run cannot be driven."""
    from cloudtune.state import open_state, this_machine

    if registry.provider_facts(run.provider).hosted:
        return
    origin = open_state().origin(run.run_id)
    if origin is not None and origin != this_machine():
        raise errors.InvalidInput(
            f"Run {run.run_id} ({run.provider}) lives on host {origin.get('host')} in CLOUDTUNE_HOME "
            f"{origin.get('home')}: its files and job are on that machine, not on this one.",
            hint="Run this command on that machine (the shared state shows the run everywhere; "
                 "`cloudtune status RUN --offline` works here).")


__all__ = ["DEFAULT_VALIDATION_SPLIT", "Pipeline", "Reporter", "SilentReporter", "delete_model_safely",
           "deployment_name", "provider_for", "split_for_run", "upload_name", "validate_for_run"]


class Pipeline(RunContext):
    """Drives one run. Construct with a ledger, a provider and a reporter; call :meth:`run`.
    The caller holds the run's lock (:class:`cloudtune.locks.RunLock`). Its data steps are an
    :class:`~cloudtune.uploads.Uploader`'s and its deletes a :class:`~cloudtune.cleanup.Cleaner`'s,
    both built on the same :class:`~cloudtune.run_context.RunContext`."""

    def __init__(
        self,
        ledger: StateStore,
        provider: Provider,
        reporter: Reporter | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        workdir: Path | None = None,
        unpause: bool = False,
    ) -> None:
        super().__init__(ledger, provider, reporter, sleep=sleep, clock=clock, workdir=workdir)
        self.unpause = unpause  # `cloudtune resume` also resumes a paused job
        self.uploader = Uploader(self)
        self.cleaner = Cleaner(self)

    # ------------------------------------------------------------ driver
    def run(self, run: Run) -> Run:
        """Carry ``run`` as far as its spec asks. Returns the run; a failed job is a result
        (status ``failed``), not an exception. Raises for everything else (timeouts included),
        with the ledger up to date. The first error keeps its message and exit code; a cleanup
        that fails after it is reported beside it."""
        undone = undone_by_cleanup(run)
        if undone:
            raise errors.WorkUndone(
                f"Run {run.run_id} cannot be finished: {undone}. Deleted so far: "
                f"{', '.join(run.deleted_resources) or 'nothing'}.",
                hint=f"Start a new run with the same spec: `cloudtune run --like {run.run_id}`.",
            )
        run.status = "active"
        run.error = None
        self.ledger.save(run)
        try:
            self._validate(run)
            self.uploader.upload(run)
            self._create_job(run)
            if not run.spec.wait:
                self.reporter.step(run, f"Job {run.job_id} created; not waiting (--no-wait).")
                return run
            job = self._wait(run)
            if job.state != JobState.SUCCEEDED:
                run.status = "cancelled" if job.state == JobState.CANCELLED else "failed"
                run.error = RunError(message=_job_failure_message(job), code=job.error.code if job.error else None)
                self.ledger.save(run)
                self.cleanup_after_error(run)
                return run
            if run.spec.deploy.enabled:
                self._deploy(run)
                self.smoke_test(run)
                if run.spec.eval_file:
                    self._evaluate(run)
            run.status = "succeeded"
            self.advance(run, Step.DONE)
            self.apply_cleanup_policy(run, failed=False)
            return run
        except errors.WaitTimeout as exc:
            run.status = "timed_out"
            run.error = RunError.of(exc)
            self.ledger.save(run)
            raise
        except (errors.Interrupted, KeyboardInterrupt):
            run.status = "interrupted"
            self.ledger.save(run)
            raise
        except errors.CloudtuneError as exc:
            if run.status == "succeeded":  # the work is done; only the cleanup policy failed
                raise
            run.status = "failed"
            run.error = RunError.of(exc)
            self.ledger.save(run)
            self.cleanup_after_error(run)
            raise

    # ------------------------------------------------------------- steps
    def _validate(self, run: Run) -> None:
        if run.reached(Step.VALIDATED):
            return
        spec = run.spec
        self.reporter.step(run, f"Validating {spec.training_file}")
        report = validate_for_run(spec, tokenizer_path=self.provider.tokenizer_path(spec.base_model))
        if report is not None and not report.ok:
            found = [p for p in report.problems if p.severity == "error"]
            shown = "\n".join(f"  {problem}" for problem in found[:5])
            more = f"\n  ... and {len(found) - 5} more" if len(found) > 5 else ""
            raise errors.DatasetError(
                f"The data would be refused, so nothing was uploaded:\n{shown}{more}",
                hint=f"`cloudtune validate {spec.training_file} --provider {spec.provider}` shows every problem; "
                     "fix the file, then `cloudtune resume` validates it again.",
            )
        if report is not None and report.warnings:
            first: dict[str, Any] = {}
            for problem in report.warnings:
                first.setdefault(problem.code, problem)
            for code, problem in first.items():
                count = report.problem_counts.get(code, 1)
                where = f"line {problem.line}" + (f" and {count - 1} more" if count > 1 else "")
                self.reporter.warn(f"{problem.message} [{code}] ({where})")
        before_upload(run, self.provider, self.reporter, report)  # provider refusals, estimate, --max-cost (exit 4)
        self.advance(run, Step.VALIDATED)


    def _create_job(self, run: Run) -> None:
        if run.job_id is not None:
            return
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            existing = self._find_job(run)
            if existing is not None:
                self._adopt(run, existing, adopted=True)
                return
            run.record(ResourceKind.JOB, ResourceState.INTENDED, name=run.run_id)
            intent = self.ledger.intent(run.run_id, "create_job", attempt=attempt)
            try:
                job = self.provider.create_job(
                    run.spec,
                    training_file_id=run.training_file_id,  # type: ignore[arg-type]
                    validation_file_id=run.validation_file_id,
                    run_id=run.run_id,
                )
            except errors.TransientError as exc:
                # the request may have reached the service: look before trying again
                self.ledger.result(run.run_id, "create_job", intent, phase="error", error=exc.to_dict())
                if attempt == CREATE_ATTEMPTS:
                    raise
                self.reporter.warn(f"Creating the job failed ({exc}); checking whether it was created anyway.")
                self.sleep(exc.retry_after if exc.retry_after is not None else min(2.0**attempt, 30.0))
                continue
            except errors.CloudtuneError as exc:
                self.ledger.result(run.run_id, "create_job", intent, phase="error", error=exc.to_dict())
                raise
            self.ledger.result(run.run_id, "create_job", intent, job_id=job.id)
            self._adopt(run, job, adopted=False)
            return

    def _find_job(self, run: Run) -> Job | None:
        found = self.provider.find_jobs(run.run_id)
        if len(found) > 1:
            raise errors.SeveralJobsForRun.listing(run.run_id, found)
        return found[0] if found else None

    def _adopt(self, run: Run, job: Job, *, adopted: bool) -> None:
        run.job_id = job.id
        run.job_state = job.state
        run.record(ResourceKind.JOB, ResourceState.OWNED, id=job.id, name=run.run_id)
        self.advance(run, Step.JOB_CREATED)
        verb = "Found job" if adopted else "Created job"
        self.reporter.step(run, f"{verb} {job.id} ({job.state})")
        self.reporter.job(run, job)

    def _wait(self, run: Run) -> Job:
        assert run.job_id is not None
        if run.reached(Step.JOB_FINISHED):
            job = self.provider.get_job(run.job_id)
            self.note_job(run, job)
            return job
        if self.unpause and self.provider.supports("resume_job"):
            current = self.provider.get_job(run.job_id)
            if current.state == JobState.PAUSED:
                self.reporter.step(run, f"Job {run.job_id} is paused; resuming it")
                self.job_call(run, JobAction.RESUME)
        job = self._wait_once(run)
        if self.provider.can_restart(job):
            # the job died with its checkpoints intact (a local worker killed, say): once
            # per invocation, restart it rather than report a failure that is not the job's
            self.reporter.warn(f"Job {job.id} stopped ({job.error.message if job.error else job.provider_status}); "
                               "restarting it from its latest checkpoint.")
            self.job_call(run, JobAction.RESUME)
            job = self._wait_once(run)
        return job

    def _wait_once(self, run: Run) -> Job:
        assert run.job_id is not None
        self.reporter.step(run, f"Waiting for job {run.job_id}")

        def on_job(job: Job) -> None:
            if job.state != run.job_state or job.fine_tuned_model != run.fine_tuned_model:
                self.note_job(run, job)
            self.reporter.job(run, job)
            if job.state == JobState.PAUSED and job.error is not None and job.error.code == "paused_at_billing_cap":
                # the job waits for a person (deploy a checkpoint, resume, or cancel): stop waiting, resumable
                raise errors.WaitTimeout(job.error.message or "The job is paused.", code=job.error.code,
                                         hint=f"`cloudtune resume {run.run_id}` resumes the job and waits again.")

        def on_event(event: JobEvent) -> None:
            run.last_event_id = event.id  # saved with the next state change: resume shows no event twice
            self.reporter.event(run, event)

        job = poller.wait_for_job(
            self.provider,
            run.job_id,
            timeout_s=run.spec.timeout_s,
            on_job=on_job,
            on_event=on_event,
            after=run.last_event_id,
            sleep=self.sleep,
            clock=self.clock,
        )
        self.note_job(run, job)
        run.fine_tuned_model = job.fine_tuned_model
        self.advance(run, Step.JOB_FINISHED)
        return job

    def deploy(self, run: Run, *, name: str | None = None, model: str | None = None) -> str:
        """Deploy the run's model (or ``model``: a checkpoint of its job) as ``name``. A name that
        already serves something this run did not create is refused and recorded ``foreign``:
        it is never deleted by this run."""
        model = model or run.fine_tuned_model
        if not model:
            raise errors.ProviderError(f"Job {run.job_id} succeeded but reported no fine-tuned model.")
        name = name or deployment_name(run)
        known = run.resource(ResourceKind.DEPLOYMENT, name=name)
        try:
            current = self.provider.get_deployment(name)
        except errors.NotFound:
            current = None
        if current is not None:
            ours = current.model == model and (
                current.run_id == run.run_id
                or (current.run_id is None and known is not None and known.state != ResourceState.FOREIGN)
            )
            if not ours:
                self._refuse_deployment_name(run, name, current.model)
        run.record(ResourceKind.DEPLOYMENT, ResourceState.OWNED if current is not None else ResourceState.INTENDED,
                   name=name, id=name, model=model)
        self.ledger.save(run)
        intent = self.ledger.intent(run.run_id, "deploy", name=name, model=model)
        try:
            deployment = self.provider.deploy(model, name=name, options=run.spec.deploy, run_id=run.run_id)
        except errors.Conflict as exc:
            self.ledger.result(run.run_id, "deploy", intent, phase="error", error=exc.to_dict())
            self._refuse_deployment_name(run, name, None, str(exc))
        except errors.CloudtuneError as exc:
            self.ledger.result(run.run_id, "deploy", intent, phase="error", error=exc.to_dict())
            raise  # stays ``intended``: cleanup asks the provider whether it exists and is ours
        self.ledger.result(run.run_id, "deploy", intent, name=deployment.name, state=deployment.state.value)
        resource = run.record(ResourceKind.DEPLOYMENT, ResourceState.OWNED, name=name, id=deployment.name, model=model)
        resource.note = None
        self.ledger.save(run)
        self.reporter.step(run, f"Deploying {model} as {deployment.name}")
        for note in deployment.details.get("notes") or ():  # SKU and why, hosting cost, lifetime rules
            self.reporter.step(run, str(note))
        ready = poller.wait_for_deployment(
            self.provider,
            deployment.name,
            target="ready",
            timeout_s=run.spec.timeout_s or 3600.0,
            sleep=self.sleep,
            clock=self.clock,
            on_update=lambda d: self.reporter.deployment(run, d),
        )
        assert ready is not None
        # how to call it, kept with the record so status and --json can say it without the provider
        resource.endpoint_url = ready.endpoint_url
        resource.key_command = (ready.details or {}).get("key_command")
        self.ledger.save(run)
        return deployment.name

    def _refuse_deployment_name(self, run: Run, name: str, serves: str | None, detail: str | None = None) -> None:
        what = f"already serves {serves}" if serves else "is taken"
        run.record(ResourceKind.DEPLOYMENT, ResourceState.FOREIGN, name=name, id=name, model=serves,
                   ).note = f"{what}; not created by this run"
        self.ledger.save(run)
        raise errors.Conflict(
            f"The deployment name {name} {what}, which this run did not create: nothing was deployed, "
            f"and this run will never delete {name}." + (f" ({detail})" if detail else ""),
            hint=f"Choose another name: `cloudtune deploy {run.run_id} --name NAME` (or --deployment-name).",
        )

    def _deploy(self, run: Run) -> None:
        if run.reached(Step.DEPLOYED) and run.live_deployment():
            return
        self.deploy(run)
        self.advance(run, Step.DEPLOYED)

    def smoke_test(self, run: Run) -> None:
        """Ask the run's live deployment one question (once: a run that passed it skips it)."""
        if run.reached(Step.SMOKE_TESTED) and run.smoke_test:
            return
        name = run.live_deployment()
        assert name is not None
        try:
            answer = self.provider.chat(name, [{"role": "user", "content": run.spec.deploy.smoke_prompt}], max_tokens=64)
        except errors.InvalidInput as exc:
            # the deployment refused our request: a provider failure, not the user's input (exit 1)
            raise errors.ProviderError(f"Smoke test of {name}: the deployment refused the request: {exc}",
                                       provider=self.provider.name, status_code=exc.status_code) from exc
        if not answer.content.strip():
            raise errors.ProviderError(f"Smoke test of {name}: the deployment answered with an empty message.")
        run.smoke_test = answer.content
        self.reporter.step(run, f"Smoke test of {name}: {answer.content.strip()[:200]!r}")
        self.advance(run, Step.SMOKE_TESTED)

    def _evaluate(self, run: Run) -> None:
        if run.reached(Step.EVALUATED):
            return
        from cloudtune.compare import evaluate_deployment

        assert run.spec.eval_file is not None
        self.reporter.step(run, f"Evaluating on {run.spec.eval_file}")
        report = evaluate_deployment(self.provider, run.live_deployment(), run.spec.eval_file,
                                     model=run.fine_tuned_model)  # cached: a later compare reuses these answers
        run.evaluation = report.summary()
        self.reporter.step(run, report.headline())
        self.advance(run, Step.EVALUATED)

    # ----------------------------------------------------------- cleanup
    def apply_cleanup_policy(self, run: Run, *, failed: bool) -> None:
        self.cleaner.apply_policy(run, failed=failed)

    def cleanup_after_error(self, run: Run) -> None:
        self.cleaner.after_error(run)

    def cleanup(self, run: Run, *, models: bool = True, files: bool = True, cancel: bool = False,
                reason: str = "cloudtune cleanup") -> list[ResourceRef]:
        """Delete what the run owns, in order (see :mod:`cloudtune.cleanup`); returns what was deleted."""
        return self.cleaner.clean(run, reason=reason, models=models, files=files, cancel=cancel).deleted


def _job_failure_message(job: Job) -> str:
    if job.state == JobState.CANCELLED:
        return f"Job {job.id} was cancelled."
    if job.error is not None:
        where = f" (line {job.error.line})" if job.error.line else ""
        code = f" [{job.error.code}]" if job.error.code else ""
        return f"Job {job.id} failed{code}: {job.error.message}{where}"
    return f"Job {job.id} ended {job.state} (provider status {job.provider_status!r})."


# ---------------------------------------------------------------- dataset glue


