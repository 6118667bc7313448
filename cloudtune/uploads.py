"""The pipeline's data steps: the run-tagged copy of each data file, and uploading it exactly once.

Uploads are, with job creation, the calls whose outcome can be unknown (Ctrl-C while the file
is processed, a reset, a 502 after the service stored the body, a client-side retry). Every
upload is recorded ``intended`` before it is sent and is made under a name that carries the
run id, so an unknown outcome is resolved by finding that name - never by uploading again
blindly, and never by adopting another run's file of the same size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune import errors
from cloudtune.cleanup import find_tagged_upload
from cloudtune.types import FineTuneSpec, ResourceKind, ResourceState, Run, Step

if TYPE_CHECKING:
    from cloudtune.run_context import RunContext

UPLOAD_ATTEMPTS = 4
DEFAULT_VALIDATION_SPLIT = 0.1


def upload_name(run: Run, role: str) -> str:
    """The name a run's upload carries: the run id is in it, so the file is findable by the run
    (after a lost answer, on another machine) and never mistaken for another run's."""
    return f"ct-{run.run_id}-{role}.jsonl"


class Uploader:
    """The pipeline's data steps, on a :class:`~cloudtune.run_context.RunContext`."""

    def __init__(self, context: "RunContext") -> None:
        self.context = context

    def data_files(self, run: Run) -> list[tuple[str, Path]]:
        """(role, local path) of the data this run uploads, splitting off validation data where
        the spec (or the provider) asks for it. Deterministic, so a rebuild finds the same files."""
        spec = run.spec
        training, validation = spec.training_file, spec.validation_file
        split = spec.validation_split
        if validation is None and not split and self.context.provider.needs_validation_data(spec):
            split = DEFAULT_VALIDATION_SPLIT
            self.context.reporter.warn(f"The {spec.provider} provider needs validation data for {spec.base_model}; "
                               f"holding out {split:.0%} of the training file (seed {spec.seed or 0}).")
        if validation is None and split:
            training, validation = split_for_run(run, self.context.workdir, split)
        files = [("training", Path(training))]
        if validation is not None:
            files.append(("validation", Path(validation)))
        return files

    def upload_copy(self, run: Run, role: str, source: Path) -> Path:
        """The run-tagged copy that is uploaded (the Files API keeps the file name), readable by
        the owner only, with the byte-order mark the provider wants. The user's file is never modified."""
        from cloudtune.dataset import copy_for_upload

        directory = self.context.workdir or Path(tempfile.mkdtemp(prefix=f"cloudtune-{run.run_id}-"))
        target = directory / upload_name(run, role)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out, open(source, "rb") as data:
            # in the provider's encoding: the BOM added (Azure) or stripped (OpenAI), so one file fits all
            copy_for_upload(data, out, run.spec.provider)
        os.chmod(target, 0o600)
        return target

    def upload(self, run: Run) -> None:
        """Upload the run's data files that are not uploaded yet (each exactly once)."""
        if run.job_id is not None:
            return  # the job has its files
        for role, source in self.data_files(run):
            attribute = f"{role}_file_id"
            current = getattr(run, attribute)
            if current:
                recorded = run.resource(ResourceKind.FILE, id=current)
                if recorded is None or recorded.state == ResourceState.OWNED:
                    continue
                self.context.reporter.step(run, f"The {role} file {current} is {recorded.state}; uploading it again")
                setattr(run, attribute, None)
            setattr(run, attribute, self._upload_once(run, role, source))
            self.context.ledger.save(run)
        self.context.advance(run, Step.UPLOADED)

    def _upload_once(self, run: Run, role: str, source: Path) -> str:
        """Upload exactly once: an upload whose outcome is unknown (interrupted, reset, a 5xx
        after the body was sent) is looked for by its run-tagged name before any new attempt."""
        copy = self.upload_copy(run, role, source)
        pending = run.resource(ResourceKind.FILE, name=copy.name, role=role)
        if pending is not None and pending.state == ResourceState.INTENDED:
            found = self._resolve_upload(run, pending, "before the interruption")
            if found:
                return found
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            resource = run.record(ResourceKind.FILE, ResourceState.INTENDED, name=copy.name, role=role)
            self.context.ledger.save(run)
            intent = self.context.ledger.intent(run.run_id, "upload_file", role=role, name=copy.name, path=str(source))
            try:
                file_id = self.context.provider.upload_file(copy, progress=self._progress(run, copy))
            except (errors.Interrupted, KeyboardInterrupt):
                self.context.ledger.result(run.run_id, "upload_file", intent, phase="error", error={"type": "Interrupted"})
                raise  # stays ``intended``: resume finds it by its name
            except errors.CloudtuneError as exc:
                self.context.ledger.result(run.run_id, "upload_file", intent, phase="error", error=exc.to_dict())
                if not _outcome_unknown(exc):
                    run.resources.remove(resource)  # refused: nothing was stored
                    self.context.ledger.save(run)
                    raise
                found = self._resolve_upload(run, resource, f"after {type(exc).__name__}")
                if found:
                    return found
                if attempt == UPLOAD_ATTEMPTS:
                    raise
                self.context.reporter.warn(f"Uploading the {role} file failed ({exc}); it was not stored, trying again.")
                self.context.sleep(getattr(exc, "retry_after", None) or min(2.0**attempt, 30.0))
                continue
            run.record(ResourceKind.FILE, ResourceState.OWNED, id=file_id, name=copy.name, role=role)
            self.context.ledger.result(run.run_id, "upload_file", intent, value=file_id)
            self.context.ledger.save(run)
            self.context.reporter.step(run, f"Uploaded {role} data as {file_id}")
            return file_id
        raise AssertionError("unreachable")

    def _resolve_upload(self, run: Run, resource: Any, when: str) -> str | None:
        found = find_tagged_upload(self.context, run, resource)
        if found:
            run.record(ResourceKind.FILE, ResourceState.OWNED, id=found, name=resource.name, role=resource.role)
            self.context.ledger.save(run)
            self.context.ledger.intent(run.run_id, "adopt_upload", name=resource.name, file_id=found)
            self.context.reporter.step(run, f"Found the {resource.role} file uploaded {when}: {found}")
            return found
        if resource in run.resources:
            run.resources.remove(resource)  # looked for by its tag and not there: never stored
            self.context.ledger.save(run)
        return None

    def _progress(self, run: Run, path: Path) -> Callable[[int, int], None]:
        """Upload progress as step lines at every quarter (large files go up in parts)."""
        shown = {"quarter": 0}

        def report(sent: int, total: int) -> None:
            quarter = 4 * sent // total if total else 4
            if quarter > shown["quarter"] and total >= 16 * 1024 * 1024:
                shown["quarter"] = quarter
                self.context.reporter.step(run, f"Uploading {Path(path).name}: {sent / 2**20:,.0f} of {total / 2**20:,.0f} MB")

        return report


def _outcome_unknown(exc: errors.CloudtuneError) -> bool:
    """Whether a failed request may still have done its work (so look before repeating it)."""
    if isinstance(exc, errors.TransientError):
        return True
    status = exc.status_code
    return isinstance(exc, errors.ProviderError) and not isinstance(exc, (errors.NotFound, errors.Conflict)) and (
        status is None or status >= 500 or status in (408, 409, 429))


def validate_for_run(spec: FineTuneSpec, tokenizer_path: str | None = None) -> Any:
    """Run the dataset validator if it is available; ``None`` when it is not installed, and for
    reinforcement fine-tuning, whose examples (ending with a user message, with the grader's fields)
    the provider checks against the grader before upload (providers/azure/_rft.py)."""
    if spec.method.value == "reinforcement":
        return None
    try:
        from cloudtune.dataset import validate_file
    except ImportError:
        return None
    return validate_file(
        spec.training_file,
        provider=spec.provider,
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
