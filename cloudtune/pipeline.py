"""The pipeline: validate -> upload -> create job -> wait -> deploy -> smoke test ->
evaluate -> cleanup, with every remote step written to the ledger before it is sent.

``run`` and ``resume`` are the same code: each step looks at the run's recorded
state and skips what is done. Creating a job is the one step whose outcome can
be unknown (the request went out, the answer did not come back); before
creating, and after any such failure, the provider is asked for jobs tagged
with the run id, so a run never makes a second job.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cloudtune import errors, poller, registry
from cloudtune.ledger import Ledger
from cloudtune.provider import Provider
from cloudtune.types import (
    CleanupPolicy,
    Deployment,
    FineTuneSpec,
    Job,
    JobEvent,
    JobState,
    Run,
    Step,
)

CREATE_ATTEMPTS = 4
DEFAULT_VALIDATION_SPLIT = 0.1


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


def provider_for(run_or_spec: Run | FineTuneSpec, **kwargs: Any) -> Provider:
    spec = run_or_spec.spec if isinstance(run_or_spec, Run) else run_or_spec
    options = {**spec.provider_options, "base_model": spec.base_model}
    return registry.get_provider(spec.provider, options, **kwargs)


def deployment_name(run: Run) -> str:
    return run.spec.deploy.name or f"ct-{run.run_id}".lower()


class Pipeline:
    """Drives one run. Construct with a ledger, a provider and a reporter; call :meth:`run`."""

    def __init__(
        self,
        ledger: Ledger,
        provider: Provider,
        reporter: Reporter | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        workdir: Path | None = None,
        unpause: bool = False,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.reporter = reporter or SilentReporter()
        self.sleep = sleep or provider.sleep
        self.clock = clock or provider.clock
        self.workdir = workdir
        self.unpause = unpause  # `cloudtune resume` also resumes a paused job

    # ------------------------------------------------------------ driver
    def run(self, run: Run) -> Run:
        """Carry ``run`` as far as its spec asks. Returns the run; a failed job is a result
        (status ``failed``), not an exception. Raises for everything else (timeouts included),
        with the ledger up to date."""
        run.status = "active"
        run.error = None
        self.ledger.save(run)
        try:
            self._validate(run)
            self._upload(run)
            self._create_job(run)
            if not run.spec.wait:
                self.reporter.step(run, f"Job {run.job_id} created; not waiting (--no-wait).")
                return run
            job = self._wait(run)
            if job.state != JobState.SUCCEEDED:
                run.status = "cancelled" if job.state == JobState.CANCELLED else "failed"
                run.error = {"message": _job_failure_message(job), "code": job.error.code if job.error else None}
                self.ledger.save(run)
                self.apply_cleanup_policy(run, failed=True)
                return run
            if run.spec.deploy.enabled:
                self._deploy(run)
                self._smoke_test(run)
                if run.spec.eval_file:
                    self._evaluate(run)
            run.status = "succeeded"
            self.ledger.save(run)
            self.apply_cleanup_policy(run, failed=False)
            self._advance(run, Step.DONE)
            return run
        except errors.WaitTimeout as exc:
            run.status = "timed_out"
            run.error = exc.to_dict()
            self.ledger.save(run)
            raise
        except (errors.Interrupted, KeyboardInterrupt):
            run.status = "interrupted"
            self.ledger.save(run)
            raise
        except errors.CloudtuneError as exc:
            run.status = "failed"
            run.error = exc.to_dict()
            self.ledger.save(run)
            self.apply_cleanup_policy(run, failed=True)
            raise

    def _advance(self, run: Run, step: Step) -> None:
        if step.order > run.step.order:
            run.step = step
        self.ledger.save(run)

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
                hint=f"`cloudtune validate {spec.training_file} --provider {spec.provider}` shows every problem.",
            )
        if report is not None and report.warnings:
            first: dict[str, Any] = {}
            for problem in report.warnings:
                first.setdefault(problem.code, problem)
            for code, problem in first.items():
                count = report.problem_counts.get(code, 1)
                where = f"line {problem.line}" + (f" and {count - 1} more" if count > 1 else "")
                self.reporter.warn(f"{problem.message} [{code}] ({where})")
        self._advance(run, Step.VALIDATED)

    def _upload(self, run: Run) -> None:
        if run.reached(Step.UPLOADED):
            return
        spec = run.spec
        training, validation = spec.training_file, spec.validation_file
        split = spec.validation_split
        if validation is None and not split and self.provider.needs_validation_data(spec):
            split = DEFAULT_VALIDATION_SPLIT
            self.reporter.warn(f"The {spec.provider} provider needs validation data for {spec.base_model}; "
                               f"holding out {split:.0%} of the training file (seed {spec.seed or 0}).")
        if validation is None and split:
            training, validation = split_for_run(run, self.workdir, split)
        if run.training_file_id is None:
            run.training_file_id = self._adopt_upload(run, "training", training)
        if run.training_file_id is None:
            run.training_file_id = self._record_call(
                run, "upload_file", lambda: self.provider.upload_file(training, progress=self._progress(run, training)),
                role="training", path=str(training),
            )
            self.ledger.save(run)
            self.reporter.step(run, f"Uploaded training data as {run.training_file_id}")
        if validation is not None and run.validation_file_id is None:
            run.validation_file_id = self._adopt_upload(run, "validation", validation)
        if validation is not None and run.validation_file_id is None:
            run.validation_file_id = self._record_call(
                run, "upload_file", lambda: self.provider.upload_file(validation, progress=self._progress(run, validation)),
                role="validation", path=str(validation),
            )
            self.ledger.save(run)
            self.reporter.step(run, f"Uploaded validation data as {run.validation_file_id}")
        self._advance(run, Step.UPLOADED)

    def _adopt_upload(self, run: Run, role: str, path: Path) -> str | None:
        """An earlier invocation sent this upload and died before recording the answer: ask the
        provider for the file rather than upload (and leave behind) a second copy."""
        for intent in reversed(self.ledger.pending_intents(run.run_id, "upload_file")):
            if intent.data.get("role") != role:
                continue
            found = self.provider.find_uploaded(path, since=intent.at)
            if found:
                self.ledger.result(run.run_id, "upload_file", intent.id, value=found, adopted=True)
                self.reporter.step(run, f"Found the {role} file uploaded before the interruption: {found}")
                return found
        return None

    def _progress(self, run: Run, path: Path) -> Callable[[int, int], None]:
        """Upload progress as step lines at every quarter (large files go up in parts)."""
        shown = {"quarter": 0}

        def report(sent: int, total: int) -> None:
            quarter = 4 * sent // total if total else 4
            if quarter > shown["quarter"] and total >= 16 * 1024 * 1024:
                shown["quarter"] = quarter
                self.reporter.step(run, f"Uploading {Path(path).name}: {sent / 2**20:,.0f} of {total / 2**20:,.0f} MB")

        return report

    def _create_job(self, run: Run) -> None:
        if run.job_id is not None:
            return
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            existing = self._find_job(run)
            if existing is not None:
                self._adopt(run, existing, adopted=True)
                return
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
        return found[0] if found else None

    def _adopt(self, run: Run, job: Job, *, adopted: bool) -> None:
        run.job_id = job.id
        run.job_state = job.state
        self._advance(run, Step.JOB_CREATED)
        verb = "Found job" if adopted else "Created job"
        self.reporter.step(run, f"{verb} {job.id} ({job.state})")
        self.reporter.job(run, job)

    def _wait(self, run: Run) -> Job:
        assert run.job_id is not None
        if run.reached(Step.JOB_FINISHED):
            return self.provider.get_job(run.job_id)
        if self.unpause and self.provider.supports("resume_job"):
            current = self.provider.get_job(run.job_id)
            if current.state == JobState.PAUSED:
                self.reporter.step(run, f"Job {run.job_id} is paused; resuming it")
                self.job_call(run, "resume_job")
        job = self._wait_once(run)
        if self.provider.can_restart(job):
            # the job died with its checkpoints intact (a local worker killed, say): once
            # per invocation, restart it rather than report a failure that is not the job's
            self.reporter.warn(f"Job {job.id} stopped ({job.error.message if job.error else job.provider_status}); "
                               "restarting it from its latest checkpoint.")
            self.job_call(run, "resume_job")
            job = self._wait_once(run)
        return job

    def _wait_once(self, run: Run) -> Job:
        assert run.job_id is not None
        self.reporter.step(run, f"Waiting for job {run.job_id}")

        def on_job(job: Job) -> None:
            if job.state != run.job_state or job.fine_tuned_model != run.fine_tuned_model:
                run.job_state = job.state
                run.fine_tuned_model = job.fine_tuned_model or run.fine_tuned_model
                self.ledger.save(run)
            self.reporter.job(run, job)

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
        run.job_state = job.state
        run.fine_tuned_model = job.fine_tuned_model
        self._advance(run, Step.JOB_FINISHED)
        return job

    def _deploy(self, run: Run) -> None:
        if run.reached(Step.DEPLOYED):
            return
        model = run.fine_tuned_model
        if not model:
            raise errors.ProviderError(f"Job {run.job_id} succeeded but reported no fine-tuned model.")
        name = deployment_name(run)
        if name not in run.deployments:
            # recorded before the request, so an interrupted deploy is still cleaned up
            run.deployments.append(name)
            self.ledger.save(run)
        intent = self.ledger.intent(run.run_id, "deploy", name=name, model=model)
        deployment = self.provider.deploy(model, name=name, options=run.spec.deploy)
        self.ledger.result(run.run_id, "deploy", intent, name=deployment.name, state=deployment.state.value)
        if deployment.name != name:  # some providers name deployments themselves
            run.deployments[run.deployments.index(name)] = deployment.name
            self.ledger.save(run)
        self.reporter.step(run, f"Deploying {model} as {deployment.name}")
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
        self._advance(run, Step.DEPLOYED)

    def _smoke_test(self, run: Run) -> None:
        if run.reached(Step.SMOKE_TESTED):
            return
        name = run.deployments[-1]
        answer = self.provider.chat(name, [{"role": "user", "content": run.spec.deploy.smoke_prompt}], max_tokens=64)
        if not answer.content.strip():
            raise errors.ProviderError(f"Smoke test of {name}: the deployment answered with an empty message.")
        run.smoke_test = answer.content
        self.reporter.step(run, f"Smoke test of {name}: {answer.content.strip()[:200]!r}")
        self._advance(run, Step.SMOKE_TESTED)

    def _evaluate(self, run: Run) -> None:
        if run.reached(Step.EVALUATED):
            return
        from cloudtune.compare import evaluate_deployment

        assert run.spec.eval_file is not None
        self.reporter.step(run, f"Evaluating on {run.spec.eval_file}")
        report = evaluate_deployment(self.provider, run.deployments[-1], run.spec.eval_file)
        run.evaluation = report.summary()
        self.reporter.step(run, report.headline())
        self._advance(run, Step.EVALUATED)

    # ----------------------------------------------------------- cleanup
    def apply_cleanup_policy(self, run: Run, *, failed: bool) -> None:
        policy = run.spec.cleanup
        if policy == CleanupPolicy.ALWAYS or (policy == CleanupPolicy.ON_FAILURE and failed):
            self.reporter.step(run, f"Cleaning up (policy {policy})")
            self.cleanup(run)

    def cleanup(self, run: Run, *, models: bool = True, files: bool = True) -> list[str]:
        """Delete what the run created, in the only safe order: deployments (waiting until each
        is gone), then the model, then files. Idempotent; returns what was deleted."""
        deleted: list[str] = []
        for name in list(run.deployments):
            self.undeploy(run, name)
            deleted.append(f"deployment:{name}")
        if models and run.fine_tuned_model and f"model:{run.fine_tuned_model}" not in run.deleted:
            self._record_call(run, "delete_model", lambda: self.provider.delete_model(run.fine_tuned_model), model=run.fine_tuned_model)  # type: ignore[arg-type]
            run.deleted.append(f"model:{run.fine_tuned_model}")
            deleted.append(f"model:{run.fine_tuned_model}")
            self.ledger.save(run)
        if files:
            for file_id in (run.training_file_id, run.validation_file_id):
                if file_id and f"file:{file_id}" not in run.deleted:
                    self._record_call(run, "delete_file", lambda f=file_id: self.provider.delete_file(f), file_id=file_id)
                    run.deleted.append(f"file:{file_id}")
                    deleted.append(f"file:{file_id}")
                    self.ledger.save(run)
        if deleted:
            self.reporter.step(run, "Deleted " + ", ".join(deleted))
        if models and files:
            self._advance(run, Step.CLEANED_UP)
        return deleted

    def undeploy(self, run: Run, name: str) -> None:
        self._record_call(run, "undeploy", lambda: self.provider.undeploy(name), name=name)
        poller.wait_for_deployment(
            self.provider, name, target="deleted", timeout_s=run.spec.timeout_s or 3600.0, sleep=self.sleep, clock=self.clock
        )
        if name in run.deployments:
            run.deployments.remove(name)
        run.deleted.append(f"deployment:{name}")
        self.ledger.save(run)

    def job_call(self, run: Run, action: str) -> Job:
        """``cancel_job`` / ``pause_job`` / ``resume_job`` on the run's job, through the ledger;
        the run keeps the state the provider answered with."""
        if not run.job_id:
            raise errors.InvalidInput(f"Run {run.run_id} has no job to {action.split('_')[0]}.")
        job_id = run.job_id
        job = self._record_call(run, action, lambda: getattr(self.provider, action)(job_id), job_id=job_id)
        run.job_state = job.state
        self.ledger.save(run)
        return job

    def _record_call(self, run: Run, action: str, call: Callable[[], Any], **data: Any) -> Any:
        intent = self.ledger.intent(run.run_id, action, **data)
        try:
            result = call()
        except BaseException as exc:
            detail = exc.to_dict() if isinstance(exc, errors.CloudtuneError) else {"type": type(exc).__name__}
            self.ledger.result(run.run_id, action, intent, phase="error", error=detail)
            raise
        self.ledger.result(run.run_id, action, intent, value=result if isinstance(result, str) else None)
        return result


def delete_model_safely(
    provider: Provider,
    model: str,
    *,
    reporter: Callable[[str], None] = lambda message: None,
    include_unmanaged: bool = False,
    timeout_s: float = 3600.0,
) -> list[str]:
    """List the model's deployments, delete each and wait until it is gone, then delete the
    model. Deployments cloudtune did not create stop everything unless ``include_unmanaged``:
    nothing is deleted before that is known."""
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
        deleted.append(f"deployment:{deployment.name}")
    reporter(f"Deleting model {model}")
    provider.delete_model(model)
    deleted.append(f"model:{model}")
    return deleted


def _job_failure_message(job: Job) -> str:
    if job.state == JobState.CANCELLED:
        return f"Job {job.id} was cancelled."
    if job.error is not None:
        where = f" (line {job.error.line})" if job.error.line else ""
        code = f" [{job.error.code}]" if job.error.code else ""
        return f"Job {job.id} failed{code}: {job.error.message}{where}"
    return f"Job {job.id} ended {job.state} (provider status {job.provider_status!r})."


# ---------------------------------------------------------------- dataset glue
def validate_for_run(spec: FineTuneSpec, tokenizer_path: str | None = None) -> Any:
    """Run the dataset validator if it is available; ``None`` when it is not installed."""
    try:
        from cloudtune.dataset import validate_file
    except ImportError:
        return None
    return validate_file(
        spec.training_file,
        provider=spec.provider if spec.provider in ("openai", "azure", "local") else "local",
        model=spec.base_model,
        method=spec.method.value,
        validation_path=spec.validation_file,
        prices=spec.prices or None,
        epochs=spec.hyperparameters.epochs,
        tokenizer_path=tokenizer_path,
    )


def split_for_run(run: Run, workdir: Path | None, fraction: float) -> tuple[Path, Path]:
    from cloudtune.dataset import split_file

    out_dir = workdir or Path(tempfile.mkdtemp(prefix=f"cloudtune-{run.run_id}-"))
    return split_file(run.spec.training_file, fraction, seed=run.spec.seed or 0, out_dir=out_dir)
