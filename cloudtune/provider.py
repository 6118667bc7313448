"""The one provider interface.

A provider is mostly a translation table: its status map, its error
translation, its calls. Waiting, following, retrying, the ledger and cleanup
order live once in :mod:`cloudtune` and never in a provider.

Contract every implementation keeps (checked by :mod:`cloudtune.testing`):

* Every public operation raises only :class:`~cloudtune.errors.CloudtuneError`
  subclasses. Subclasses implement :meth:`Provider.translate_error` - the one
  place their SDK's exceptions are turned into ours; the base class routes every
  interface call through it, so no provider method needs its own try/except.
* ``get_*`` of something that does not exist raises :class:`NotFound`.
* Deletes are idempotent: deleting what is already gone is success. The base
  class enforces it by swallowing ``NotFound`` from ``delete_file``,
  ``undeploy`` and ``delete_model`` - except ``delete_model(..., missing_ok=False)``,
  which the ``delete-model`` command uses so that a misspelt id is not "deleted".
* A run owns exactly what it created: ``deploy(..., run_id=...)`` tags the
  deployment with the run id where the service has tags and reads it back into
  ``Deployment.run_id``; uploads carry the run id in their file name (the pipeline
  names the copy it uploads ``ct-<run_id>-<role>.jsonl``) and ``find_uploaded``
  matches that exact name, so no run adopts another's upload; ``get_file`` lets the
  pipeline check a file still carries the run's name right before deleting it.
* Unknown provider statuses map to ``JobState.UNKNOWN`` (see :meth:`map_status`),
  never an exception.
* What a provider cannot do is declared in :attr:`Provider.unsupported`
  (:class:`~cloudtune.provider_facts.Operation` -> reason); calling it raises :class:`UnsupportedOperation` with
  that reason before any SDK is touched.
* ``delete_model`` on a model that is still deployed raises :class:`Conflict`;
  cloudtune's pipeline always undeploys first.
* ``create_job`` puts ``run_id`` into the job's metadata (or the provider's
  equivalent) so that :meth:`find_jobs` can find it again after a crash.
* Nothing secret (keys, tokens) is ever put in a returned object.
"""

from __future__ import annotations

import abc
import functools
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cloudtune import errors, interrupts, timescale
from cloudtune.provider_facts import DEFAULT_FACTS, Operation, ProviderFacts, ProviderOptions
from cloudtune.types import (
    ChatResult,
    Checkpoint,
    CheckResult,
    Deployment,
    DeployOptions,
    FineTuneSpec,
    Job,
    JobEvent,
    JobState,
    RemoteFile,
)

UploadProgress = Callable[[int, int], None]  # (bytes_sent, bytes_total)

#: How far apart the clocks of the machine that started a run, the machine looking for what it
#: made, and the service may be. Every search for a run's resources (``find_jobs``,
#: ``find_uploaded``, cleanup's look for an unanswered upload) reaches this far back before the
#: run's start: CI runners' clocks are often minutes off, and reaching further
#: back only lists a few more items - matches are made by the run's tag, never by time.
CLOCK_SKEW_S = 15 * 60.0


def search_since(run_started: float) -> float:
    """The unix time a search for the resources of a run begun at ``run_started`` goes back to."""
    return run_started - CLOCK_SKEW_S

#: The operations of the interface, in the order a run uses them.
OPERATIONS: tuple[str, ...] = tuple(operation.value for operation in Operation)
_IDEMPOTENT_DELETES = frozenset({"delete_file", "undeploy", "delete_model"})


class Provider(abc.ABC):
    """Base class of every provider. See the module docstring for the contract."""

    #: the registry name (``--provider NAME``)
    name: ClassVar[str] = ""
    #: operation -> why this provider cannot do it (skypilot-style, checked in one place)
    unsupported: ClassVar[Mapping[Operation | str, str]] = {}
    #: raw provider status -> shared state; anything missing maps to ``unknown``
    status_map: ClassVar[Mapping[str, JobState]] = {}
    #: the pip extra that installs this provider's SDK
    install_extra: ClassVar[str | None] = None
    #: data rules, hosted or not, model table, request concurrency (:mod:`cloudtune.provider_facts`)
    facts: ClassVar[ProviderFacts] = DEFAULT_FACTS
    #: the ``-o KEY=VALUE`` options this provider reads, as a pydantic model; anything else (or a
    #: bad value) is refused before a run starts (:func:`cloudtune.registry.check_options`)
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    #: option name -> one-line help, derived from ``Options`` (a subclass may declare this mapping
    #: instead of ``Options``: each name then becomes an option of any value)
    option_names: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        sleep: Callable[[float], None] = timescale.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options: dict[str, Any] = dict(options or {})
        # Injected so that tests and benchmarks can run timelines in milliseconds.
        self.sleep = sleep
        self.clock = clock

    # ------------------------------------------------------------ plumbing
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _declare_options(cls)
        for operation in OPERATIONS:
            method = cls.__dict__.get(operation)
            if method is not None and callable(method) and not getattr(method, "_cloudtune_wrapped", False):
                setattr(cls, operation, _guarded(operation, method))

    def map_status(self, raw: str | None) -> JobState:
        """The provider's raw status string -> the shared state (unknown if unmapped)."""
        if raw is None:
            return JobState.UNKNOWN
        return self.status_map.get(raw, self.status_map.get(str(raw).lower(), JobState.UNKNOWN))

    def require(self, operation: str) -> None:
        reason = self.unsupported.get(operation)
        if reason is not None:
            raise errors.UnsupportedOperation(
                f"The {self.name} provider cannot {operation.replace('_', ' ')}: {reason}",
                provider=self.name,
            )

    def event_may_change_state(self, event: JobEvent) -> bool:
        """Whether this event can mean the job's state moved, so the poller fetches the job.
        Metric events never do; providers that know their messages can say more."""
        return not (event.data.get("type") == "metrics" or ("step" in event.data and "train_loss" in event.data))

    def tokenizer_path(self, base_model: str) -> str | None:
        """A local Hugging Face tokenizer directory for ``base_model`` if one is at hand without
        downloading or converting anything (exact token counts for local models)."""
        return None

    def needs_validation_data(self, spec: FineTuneSpec) -> bool:
        """Whether a job for ``spec`` cannot be created without validation data (the pipeline
        then splits some off the training file when the user gave neither file nor split)."""
        return False

    def can_restart(self, job: Job) -> bool:
        """Whether a *failed* job can be restarted with :meth:`resume_job` (e.g. a local worker
        that died: its checkpoints survive). ``cloudtune resume`` restarts such jobs."""
        return False

    def supports(self, operation: Operation | str) -> bool:
        return operation not in self.unsupported

    def plan(self, spec: FineTuneSpec) -> list[str]:
        """Before anything is uploaded: raise :class:`~cloudtune.errors.CapabilityError` (exit 4)
        for what the service would refuse, and return the lines the user should read first
        (resolved model ids, training type, shut-down dates). Nothing to say by default."""
        return []

    def hosting_note(self, spec: FineTuneSpec) -> str | None:
        """The hourly cost of the deployment ``spec`` will make, or None when there is none."""
        return None

    def hourly_billing(self, spec: FineTuneSpec) -> tuple[float | None, float] | None:
        """(USD per training hour or None when unpublished, the bill at which the service pauses the job)
        for training billed by the hour rather than by the token (Azure RFT); None otherwise."""
        return None

    def translate_error(self, exc: BaseException) -> errors.CloudtuneError:
        """Turn this provider's SDK exception into a cloudtune error. Override it."""
        return errors.ProviderError(f"{self.name}: {type(exc).__name__}: {exc}", provider=self.name)

    def close(self) -> None:
        """Release clients, sockets, processes. Safe to call twice."""

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- interface
    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Preflight: SDK installed, credentials found, region / capability. Never raises for a
        missing credential: it is reported in the result."""

    @abc.abstractmethod
    def upload_file(self, path: Path, *, purpose: str = "fine-tune", progress: UploadProgress | None = None) -> str:
        """Upload a JSONL file and wait until the provider can use it; returns its id."""

    def find_uploaded(self, path: Path, *, since: float) -> str | None:
        """The id of a file uploaded under ``path``'s exact name (which carries the run id) at or
        after ``since`` (unix time), for an upload whose answer never came back; ``None`` when there
        is none or the provider cannot tell. Never matches a file of another name."""
        return None

    def get_file(self, file_id: str) -> RemoteFile:
        """The file's name, size and status (the ownership check before a delete)."""
        raise errors.UnsupportedOperation(f"The {self.name} provider cannot describe files", provider=self.name)

    @abc.abstractmethod
    def delete_file(self, file_id: str) -> None: ...

    @abc.abstractmethod
    def create_job(
        self,
        spec: FineTuneSpec,
        *,
        training_file_id: str,
        validation_file_id: str | None,
        run_id: str,
    ) -> Job:
        """Create the job exactly once: no SDK-level retries here (a retried POST can make a
        second job); the pipeline looks for the run id with :meth:`find_jobs` when the outcome
        is unknown."""

    @abc.abstractmethod
    def find_jobs(self, run_id: str) -> list[Job]:
        """Jobs whose metadata carries this run id, newest first."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job: ...

    def list_jobs(self, limit: int = 20) -> list[Job]:
        raise errors.UnsupportedOperation(f"The {self.name} provider does not list jobs", provider=self.name)

    @abc.abstractmethod
    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 100) -> list[JobEvent]:
        """Events created after the event id ``after``, OLDEST FIRST (providers that page newest
        first reverse here), at most ``limit``."""

    @abc.abstractmethod
    def list_checkpoints(self, job_id: str) -> list[Checkpoint]: ...

    @abc.abstractmethod
    def cancel_job(self, job_id: str) -> Job: ...

    def pause_job(self, job_id: str) -> Job:
        raise errors.UnsupportedOperation(f"The {self.name} provider cannot pause jobs", provider=self.name)

    def resume_job(self, job_id: str) -> Job:
        raise errors.UnsupportedOperation(f"The {self.name} provider cannot resume paused jobs", provider=self.name)

    @abc.abstractmethod
    def deploy(self, model: str, *, name: str, options: DeployOptions | None = None) -> Deployment:
        """Start deploying ``model`` as ``name``; may return a ``creating`` deployment (the
        pipeline waits with :func:`cloudtune.poller.wait_for_deployment`). Deploying a name that
        already serves the same model returns it (idempotent, so resume is safe); a name that
        serves another model raises :class:`Conflict`. Implementations may also accept a
        ``run_id`` keyword (the base class passes it only to those that do) and tag the
        deployment with it."""

    @abc.abstractmethod
    def get_deployment(self, name: str) -> Deployment: ...

    @abc.abstractmethod
    def list_deployments(self, model: str | None = None) -> list[Deployment]:
        """Deployments, including ones cloudtune did not create (``managed_by_cloudtune``)."""

    @abc.abstractmethod
    def undeploy(self, name: str) -> None:
        """Start deleting a deployment; already gone is success."""

    @abc.abstractmethod
    def delete_model(self, model: str) -> None:
        """Delete a fine-tuned model; already gone is success (unless the caller passes
        ``missing_ok=False``, handled by the base class); still deployed -> Conflict."""

    def model_exists(self, model: str) -> bool | None:
        """Whether the fine-tuned ``model`` still exists at the service; ``None`` when this provider
        cannot tell. Asked before a run calls a model its own: a rebuild on a fresh machine, a
        resume after a delete whose answer never came back (issue 16 points 3 and 5)."""
        return None

    @abc.abstractmethod
    def chat(self, deployment: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> ChatResult:
        """One chat completion against a deployment (smoke tests, evaluation)."""


def _declare_options(cls: type[Provider]) -> None:
    """Keep ``Options`` and ``option_names`` in step: a class that declares ``Options`` gets its
    help texts as ``option_names``; one that declares only ``option_names`` gets a model of them."""
    if "Options" in cls.__dict__:
        cls.option_names = {key: field.description or "" for key, field in cls.Options.model_fields.items()
                            if field.description}
    elif "option_names" in cls.__dict__:
        from pydantic import Field, create_model

        fields: dict[str, Any] = {key: (Any, Field(None, description=help_text))
                                  for key, help_text in cls.option_names.items()}
        cls.Options = create_model(f"{cls.__name__}Options", __base__=ProviderOptions, **fields)


def _guarded(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one interface method: declared-unsupported check, the single error translation
    point, and idempotent deletes."""

    accepted = inspect.signature(method).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())

    @functools.wraps(method)
    def wrapper(self: Provider, *args: Any, **kwargs: Any) -> Any:
        self.require(operation)
        missing_ok = kwargs.pop("missing_ok", True) if operation in _IDEMPOTENT_DELETES else True
        for optional in ("run_id",) if operation == "deploy" else ():
            if optional in kwargs and optional not in accepted and not takes_any:
                kwargs.pop(optional)  # a provider whose service has no tags
        try:
            return method(self, *args, **kwargs)
        except errors.CloudtuneError as exc:
            if isinstance(exc, errors.NotFound) and operation in _IDEMPOTENT_DELETES and missing_ok:
                return None
            if exc.provider is None:
                exc.provider = self.name
            raise
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - this IS the translation point
            interrupts.raise_instead_of(exc)  # a signal some library turned into its own error
            translated = self.translate_error(exc)
            if isinstance(translated, errors.NotFound) and operation in _IDEMPOTENT_DELETES and missing_ok:
                return None
            if translated.provider is None:
                translated.provider = self.name
            raise translated from exc

    wrapper._cloudtune_wrapped = True  # type: ignore[attr-defined]
    return wrapper


# The optional operations implemented on the base class go through the same guard,
# so a provider that declares them unsupported gets its own reason in the error.
for _operation in ("list_jobs", "pause_job", "resume_job", "get_file", "model_exists"):
    setattr(Provider, _operation, _guarded(_operation, Provider.__dict__[_operation]))
del _operation
