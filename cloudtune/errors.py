"""The one error hierarchy of cloudtune, and the one place errors become exit codes.

Every provider translates its SDK's exceptions into these at a single point
(its ``translate_error``), so the pipeline, the CLI and the user only ever see
this tree::

    CloudtuneError                      exit 1 unless a subclass says otherwise
    ├── InvalidInput (ValueError)       exit 2  config, dataset, arguments
    │   ├── ConfigError                         YAML / flags / spec
    │   ├── DatasetError                        the data would be refused
    │   └── StateUnusable                       the state store is corrupt, newer or unreachable
    ├── AuthError (PermissionError)     exit 3  credentials missing or refused
    ├── CapabilityError                 exit 4  quota, region or capability
    │   ├── QuotaExceeded
    │   ├── RegionUnavailable
    │   └── UnsupportedOperation                declared by the provider as data
    ├── ProviderError                   exit 1  the provider answered with an error
    │   ├── NotFound (LookupError)              deletes treat it as success
    │   ├── Conflict                            e.g. a model that is still deployed
    │   └── TransientError                      retried: 429, 5xx, dropped connection
    │       └── RateLimited                     carries ``retry_after``
    ├── JobFailed                       exit 1  the job ended failed or cancelled
    ├── WorkUndone                      exit 1  resume: what the run needs was deleted by a cleanup
    ├── WaitTimeout (TimeoutError)      exit 5  still running; ``cloudtune resume`` later
    ├── RunLocked (BlockingIOError)     exit 6  another cloudtune process drives this run
    ├── ProviderUnavailable (ImportError) exit 2  unknown provider or SDK not installed
    └── Interrupted                     exit 130 SIGINT / SIGTERM

Messages are written for the person at the terminal: what happened and what to
do next. The CLI prints ``str(error)`` (plus ``hint``) and never a traceback for
these.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_AUTH = 3
EXIT_CAPABILITY = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_RUN_LOCKED = 6
EXIT_INTERRUPTED = 130

EXIT_CODES_DOC = {
    EXIT_OK: "success",
    EXIT_JOB_FAILED: "job failed or cancelled, or the provider returned an error",
    EXIT_INVALID_INPUT: "invalid input: config, dataset or arguments",
    EXIT_AUTH: "authentication or permission",
    EXIT_CAPABILITY: "quota, region or capability",
    EXIT_WAIT_TIMEOUT: "wait timed out while the job is still running (resume later)",
    EXIT_RUN_LOCKED: "another cloudtune process is driving this run (its pid is named; --wait-lock waits)",
    EXIT_INTERRUPTED: "interrupted (SIGINT/SIGTERM)",
}


class CloudtuneError(Exception):
    """Root of every error cloudtune raises on purpose."""

    exit_code = EXIT_JOB_FAILED

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        provider: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.request_id = request_id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type(self).__name__, "message": self.message}
        for key in ("hint", "provider", "status_code", "code", "request_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["exit_code"] = exit_code_for(self)
        return out

    def __str__(self) -> str:
        parts = [self.message]
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class InvalidInput(CloudtuneError, ValueError):
    exit_code = EXIT_INVALID_INPUT


class ConfigError(InvalidInput):
    pass


class DatasetError(InvalidInput):
    pass


class StateUnusable(InvalidInput):
    """The state store (ledger) cannot be used: corrupt, written by a newer cloudtune, unreachable."""


class AuthError(CloudtuneError, PermissionError):
    exit_code = EXIT_AUTH


class CapabilityError(CloudtuneError):
    exit_code = EXIT_CAPABILITY


class QuotaExceeded(CapabilityError):
    pass


class RegionUnavailable(CapabilityError):
    pass


class UnsupportedOperation(CapabilityError):
    """A provider declared (as data) that it cannot do this."""


class ProviderError(CloudtuneError):
    pass


class NotFound(ProviderError, LookupError):
    pass


class Conflict(ProviderError):
    pass


class TransientError(ProviderError):
    """Worth retrying: rate limits, 5xx, dropped connections."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(TransientError):
    pass


class SeveralJobsForRun(Conflict):
    """Several jobs carry one run's tag (two runners drove it, or another tool made one): which one
    is the run's cannot be known, so nothing guesses (issue 16 point 6)."""

    @classmethod
    def listing(cls, run_id: str, jobs: list) -> "SeveralJobsForRun":  # type: ignore[type-arg]
        listed = ", ".join(f"{job.id} ({job.state}{', ' + job.fine_tuned_model if job.fine_tuned_model else ''})"
                           for job in jobs)
        return cls(
            f"{len(jobs)} jobs carry run {run_id}'s tag: {listed}. cloudtune will not guess which one is the run's.",
            hint=f"`cloudtune cleanup {run_id}` (--cancel for active ones) deletes what every one of them made; "
                 "then start a new run (`cloudtune run --like RUN`).",
            code="SeveralJobsForRun",
        )


class JobFailed(CloudtuneError):
    exit_code = EXIT_JOB_FAILED


class WorkUndone(CloudtuneError):
    """``resume`` cannot finish the run: something it needs (its model, say) was deleted by a
    cleanup. Never reported as success."""

    exit_code = EXIT_JOB_FAILED


class RunLocked(CloudtuneError, BlockingIOError):
    """Another process holds the run's lock (one driver per run)."""

    exit_code = EXIT_RUN_LOCKED


class WaitTimeout(CloudtuneError, TimeoutError):
    exit_code = EXIT_WAIT_TIMEOUT


class ProviderUnavailable(CloudtuneError, ImportError):
    exit_code = EXIT_INVALID_INPUT


class Interrupted(CloudtuneError):
    exit_code = EXIT_INTERRUPTED


def exit_code_for(error: BaseException) -> int:
    """The one mapping from an exception to the process exit code."""
    if isinstance(error, CloudtuneError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_JOB_FAILED


__all__ = [name for name in dir() if name[0].isupper() and not name.startswith("EXIT_CODES")] + [
    "EXIT_CODES_DOC",
    "exit_code_for",
]
