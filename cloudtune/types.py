"""Every data type cloudtune passes around, in one module (pydantic v2).

Providers translate their SDK objects into these; the pipeline, the ledger,
the CLI and the tests only ever see these.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


# --------------------------------------------------------------------------- jobs


class JobState(str, enum.Enum):
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:  # so f-strings print "running", not "JobState.RUNNING"
        return self.value


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

_ACTIVE = {JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING, JobState.PAUSED}
# The one table of allowed transitions, shared by every provider. ``unknown`` is
# ignorance, not a state of the job, so it may come from and go to anything
# non-terminal. Terminal states are final.
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.VALIDATING: frozenset({JobState.QUEUED, JobState.RUNNING} | TERMINAL_STATES | {JobState.UNKNOWN}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.PAUSED} | TERMINAL_STATES | {JobState.UNKNOWN}),
    JobState.RUNNING: frozenset({JobState.PAUSED} | TERMINAL_STATES | {JobState.UNKNOWN}),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.RUNNING} | TERMINAL_STATES | {JobState.UNKNOWN}),
    JobState.UNKNOWN: frozenset(_ACTIVE | TERMINAL_STATES),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(current: JobState, new: JobState) -> bool:
    """Whether a job may go from ``current`` to ``new`` (staying put is always allowed)."""
    return current == new or new in JOB_TRANSITIONS[current]


class JobError(_Model):
    code: str | None = None
    message: str
    line: int | None = None  # the training-file line the provider blamed, if any
    param: str | None = None


class Job(_Model):
    id: str
    provider: str
    state: JobState
    provider_status: str | None = None  # the raw string the provider returned
    base_model: str | None = None
    fine_tuned_model: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    trained_tokens: int | None = None
    error: JobError | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # latest: step, total_steps, epoch, train_loss, valid_loss...
    metadata: dict[str, str] = Field(default_factory=dict)
    estimated_finish: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


class EventLevel(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class JobEvent(_Model):
    id: str
    created_at: datetime
    level: EventLevel = EventLevel.INFO
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("level", mode="before")
    @classmethod
    def _lenient_level(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() not in {"info", "warning", "error"}:
            return "warning" if value.lower() in {"warn"} else "info"
        return value.lower() if isinstance(value, str) else value


class Checkpoint(_Model):
    id: str
    job_id: str
    step: int | None = None
    created_at: datetime | None = None
    model: str | None = None  # a model id that can be deployed, where the provider has one
    metrics: dict[str, float] = Field(default_factory=dict)


# ------------------------------------------------------------------- deployments


class DeploymentState(str, enum.Enum):
    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


class Deployment(_Model):
    name: str
    model: str
    state: DeploymentState
    endpoint_url: str | None = None
    provider_status: str | None = None
    managed_by_cloudtune: bool = True
    run_id: str | None = None  # the run id the deployment is tagged with, where the service has tags
    details: dict[str, Any] = Field(default_factory=dict)  # never secrets


class ChatMessage(_Model):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


class ChatResult(_Model):
    content: str
    model: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None


class CheckResult(_Model):
    """What ``cloudtune providers`` shows for one provider."""

    provider: str
    sdk_installed: bool
    credentials_found: bool
    ok: bool
    details: dict[str, Any] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    install_hint: str | None = None


# ------------------------------------------------------------------------ specs


class Method(str, enum.Enum):
    SUPERVISED = "supervised"
    DPO = "dpo"
    REINFORCEMENT = "reinforcement"  # Azure OpenAI RFT (o4-mini, gpt-5): needs grader_file

    def __str__(self) -> str:
        return self.value


class CleanupPolicy(str, enum.Enum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"

    def __str__(self) -> str:
        return self.value


class Hyperparameters(_Model):
    """``None`` means "the provider's auto"."""

    epochs: int | None = Field(default=None, ge=1, le=100)
    batch_size: int | None = Field(default=None, ge=1)
    learning_rate_multiplier: float | None = Field(default=None, gt=0)
    beta: float | None = Field(default=None, gt=0)  # DPO only
    extra: dict[str, Any] = Field(default_factory=dict)  # provider-specific (LoRA rank, warmup...)

    @field_validator("epochs", "batch_size", "learning_rate_multiplier", mode="before")
    @classmethod
    def _auto_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value


class DeployOptions(_Model):
    enabled: bool = True
    name: str | None = None
    sku: str | None = None
    capacity: int | None = None
    smoke_prompt: str = "Reply with one short sentence: are you ready?"


class FineTuneSpec(_Model):
    provider: str
    base_model: str
    training_file: Path
    validation_file: Path | None = None
    validation_split: float | None = Field(default=None, gt=0, lt=1)
    method: Method = Method.SUPERVISED
    grader_file: Path | None = None  # reinforcement: the grader (YAML / JSON), providers/azure/_rft.py
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    deploy: DeployOptions = Field(default_factory=DeployOptions)
    eval_file: Path | None = None
    cleanup: CleanupPolicy = CleanupPolicy.NEVER
    wait: bool = True
    timeout_s: float | None = Field(default=None, gt=0)
    cancel_on_interrupt: bool = False
    provider_options: dict[str, Any] = Field(default_factory=dict)  # endpoint, region, workspace... never secrets
    prices: dict[str, float] = Field(default_factory=dict)  # per-model price overrides (USD per 1M training tokens)
    max_cost_usd: float | None = Field(default=None, ge=0)  # refuse before upload above this estimate (cloudtune.costs)

    @model_validator(mode="after")
    def _one_validation_source(self) -> "FineTuneSpec":
        if self.validation_file is not None and self.validation_split is not None:
            raise ValueError("give validation_file or validation_split, not both")
        return self


# ------------------------------------------------------------------------- runs


class Step(str, enum.Enum):
    """Pipeline progress in order; a run records the last step completed. Cleanup is not
    progress: it has its own record (:class:`CleanupRecord`), so deleting what a run made never
    makes the run look further along (or done)."""

    CREATED = "created"
    VALIDATED = "validated"
    UPLOADED = "uploaded"
    JOB_CREATED = "job_created"
    JOB_FINISHED = "job_finished"
    DEPLOYED = "deployed"
    SMOKE_TESTED = "smoke_tested"
    EVALUATED = "evaluated"
    DONE = "done"

    def __str__(self) -> str:
        return self.value

    @property
    def order(self) -> int:
        return list(Step).index(self)


RunStatus = Literal["active", "succeeded", "failed", "cancelled", "interrupted", "timed_out"]

#: A run's id (``20261204-151031-0e9adc``): the ledger's key, the tag on everything the run creates.
RunId = NewType("RunId", str)


class JobAction(str, enum.Enum):
    """What a command may ask of a run's job (each is the provider operation of the same name)."""

    CANCEL = "cancel_job"
    PAUSE = "pause_job"
    RESUME = "resume_job"

    @property
    def verb(self) -> str:
        return self.value.split("_")[0]

    def __str__(self) -> str:
        return self.value


class RunError(BaseModel):
    """Why a run stopped: the first error (a cloudtune error's ``to_dict()``, or a failed job's
    message and code) and, beside it, a cleanup that failed after it. Only what is known is
    written to the ledger and to ``--json``."""

    model_config = ConfigDict(extra="allow")

    message: str = ""
    type: str | None = None
    code: str | None = None
    hint: str | None = None
    provider: str | None = None
    status_code: int | None = None
    request_id: str | None = None
    exit_code: int | None = None
    #: a cleanup (the run's policy) that failed after the first error
    cleanup_error: str | None = None

    @classmethod
    def of(cls, exc: Any) -> "RunError":
        """From a :class:`~cloudtune.errors.CloudtuneError` (its ``to_dict()``)."""
        return cls(**exc.to_dict())

    @model_serializer(mode="wrap")
    def _known_only(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def __str__(self) -> str:
        return self.message


class ResourceKind(str, enum.Enum):
    FILE = "file"
    DATA_ASSET = "data_asset"
    JOB = "job"
    MODEL = "model"
    DEPLOYMENT = "deployment"
    ENDPOINT = "endpoint"

    def __str__(self) -> str:
        return self.value


class ResourceState(str, enum.Enum):
    """Ownership of one remote resource (Terraform-state style: cloudtune deletes only what its
    own record says this run created, and checks again right before it deletes)."""

    INTENDED = "intended"  # the request was sent; whether it created anything is not known yet
    OWNED = "owned"        # the provider confirmed that this run created it
    DELETING = "deleting"  # a delete was sent
    DELETED = "deleted"    # gone (deleted by cloudtune, or found gone)
    FOREIGN = "foreign"    # exists but is not this run's: never deleted, only reported

    def __str__(self) -> str:
        return self.value


#: Deleted before these, in this order: what serves a model goes before the model, the model
#: before the data it was trained on (a job may still read its files).
CLEANUP_ORDER = (ResourceKind.DEPLOYMENT, ResourceKind.ENDPOINT, ResourceKind.MODEL, ResourceKind.FILE,
                 ResourceKind.DATA_ASSET)


class Verdict(str, enum.Enum):
    """The last ownership check before a delete (:func:`cloudtune.cleanup.ownership`)."""

    OURS = "ours"        # still this run's: delete it
    GONE = "gone"        # already gone: nothing to delete
    FOREIGN = "foreign"  # exists but is no longer this run's: never deleted, only reported

    def __str__(self) -> str:
        return self.value


class ResourceRef(str):
    """One resource named in a cleanup record: ``kind:id``, or ``kind:id (why)`` for one left alone.
    It is the string the ledger and ``--json`` have always shown; its parts are read by name
    (``ref.kind``, ``ref.id``, ``ref.why``), never by matching text."""

    @classmethod
    def of(cls, kind: "ResourceKind | str", ident: str, why: str | None = None) -> "ResourceRef":
        return cls(f"{kind}:{ident}" + (f" ({why})" if why else ""))

    @property
    def kind(self) -> str:
        return self.partition(":")[0]

    @property
    def id(self) -> str:
        rest = self.partition(":")[2]
        return rest[: -len(f" ({self.why})")] if self.why else rest

    @property
    def why(self) -> str | None:
        rest = self.partition(":")[2]
        if rest.endswith(")") and " (" in rest:
            return rest.split(" (", 1)[1][:-1]
        return None

    @property
    def bare(self) -> "ResourceRef":
        """The reference without its reason."""
        return ResourceRef.of(self.kind, self.id)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


class Resource(_Model):
    kind: ResourceKind
    id: str | None = None       # None while ``intended`` and the provider has not answered
    name: str | None = None     # the run-tagged name it was created under (file name, deployment name)
    role: str | None = None     # training / validation for files
    model: str | None = None    # deployments: the model they serve
    state: ResourceState = ResourceState.INTENDED
    provider: str | None = None
    note: str | None = None     # why foreign, how it went
    endpoint_url: str | None = None   # deployments: the base URL an OpenAI client points at
    key_command: str | None = None    # deployments: a command that prints the key (never the key)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def ref(self) -> ResourceRef:
        return ResourceRef.of(self.kind, self.id or self.name or "")


class CleanupRecord(_Model):
    """One cleanup of a run: when, why, and what happened to each resource."""

    at: datetime = Field(default_factory=utcnow)
    reason: str                               # "policy on-failure", "cloudtune cleanup", ...
    deleted: list[ResourceRef] = Field(default_factory=list)   # kind:id, in the order deleted
    gone: list[ResourceRef] = Field(default_factory=list)      # already gone when cleanup looked
    skipped: list[ResourceRef] = Field(default_factory=list)   # kind:id (why): foreign, job still active...
    errors: list[str] = Field(default_factory=list)            # "kind:id: what went wrong"

    def summary(self) -> str:
        """One line: what was deleted, already gone, left alone (not this run's) and what failed."""
        parts = [f"deleted {', '.join(self.deleted)}"] if self.deleted else []
        if self.gone:
            parts.append(f"already gone {', '.join(self.gone)}")
        if self.skipped:
            parts.append(f"left alone {', '.join(self.skipped)}")
        if self.errors:
            parts.append(f"failed {'; '.join(self.errors)}")
        return "; ".join(parts) or "nothing of this run to delete"


class RemoteFile(_Model):
    id: str
    name: str | None = None
    bytes: int | None = None
    created_at: datetime | None = None
    status: str | None = None


class Run(_Model):
    run_id: str
    spec: FineTuneSpec
    provider: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    step: Step = Step.CREATED
    status: RunStatus = "active"
    training_file_id: str | None = None
    validation_file_id: str | None = None
    job_id: str | None = None
    job_state: JobState | None = None
    last_event_id: str | None = None  # events up to this one were shown; resume goes on after it
    fine_tuned_model: str | None = None
    resources: list[Resource] = Field(default_factory=list)
    cleanups: list[CleanupRecord] = Field(default_factory=list)
    smoke_test: str | None = None
    evaluation: dict[str, Any] | None = None
    error: RunError | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_older_ledgers(cls, data: Any) -> Any:
        """Runs recorded before the resource records kept ``deployments`` / ``deleted`` string lists."""
        if not isinstance(data, dict) or ("deployments" not in data and "deleted" not in data):
            return data
        data = dict(data)
        deleted = set(data.pop("deleted", None) or [])
        resources = list(data.get("resources") or [])
        for name in data.pop("deployments", None) or []:
            gone = f"deployment:{name}" in deleted
            resources.append({"kind": "deployment", "id": name, "name": name, "model": data.get("fine_tuned_model"),
                              "state": "deleted" if gone else "owned"})
        for ref in deleted:
            kind, _, ident = ref.partition(":")
            if kind in ("file", "model", "deployment") and not any(r.get("id") == ident for r in resources):
                resources.append({"kind": kind, "id": ident, "state": "deleted"})
        data["resources"] = resources
        if data.get("step") == "cleaned_up":
            data["step"] = "evaluated"
        return data

    def reached(self, step: Step) -> bool:
        return self.step.order >= step.order

    # ------------------------------------------------------------ the resource records
    def resource(self, kind: ResourceKind, *, id: str | None = None, name: str | None = None,
                 role: str | None = None) -> Resource | None:
        """The newest record of this kind matching every key given."""
        for res in reversed(self.resources):
            if res.kind != kind:
                continue
            if id is not None and res.id != id:
                continue
            if name is not None and res.name != name:
                continue
            if role is not None and res.role != role:
                continue
            return res
        return None

    def record(self, kind: ResourceKind, state: ResourceState, **fields: Any) -> Resource:
        """Add a resource record, or update the one with the same kind and id / name."""
        existing = None
        if fields.get("id") is not None:
            existing = self.resource(kind, id=fields["id"])
        if existing is None and fields.get("name") is not None:
            existing = self.resource(kind, name=fields["name"], role=fields.get("role"))
        if existing is None:
            existing = Resource(kind=kind, state=state, provider=self.provider)
            self.resources.append(existing)
        existing.state = state
        existing.updated_at = utcnow()
        for key, value in fields.items():
            if value is not None:
                setattr(existing, key, value)
        return existing

    def owned(self, kind: ResourceKind | None = None) -> list[Resource]:
        return [r for r in self.resources if r.state == ResourceState.OWNED and (kind is None or r.kind == kind)]

    @property
    def deployment_names(self) -> list[str]:
        """Names of the deployments this run owns and has not deleted (newest last)."""
        return [r.id or r.name or "" for r in self.resources
                if r.kind == ResourceKind.DEPLOYMENT and r.state in (ResourceState.OWNED, ResourceState.DELETING)]

    @property
    def deleted_resources(self) -> list[ResourceRef]:
        """Every resource of this run that is deleted: first what its cleanups deleted, in that
        order, then what was found gone (a cleanup record's ``deleted`` is one cleanup's)."""
        ordered = [ref for record in self.cleanups for ref in record.deleted]
        gone = [r.ref for r in self.resources if r.state == ResourceState.DELETED and r.ref not in ordered]
        return list(dict.fromkeys(ordered)) + gone

    @property
    def foreign(self) -> list[ResourceRef]:
        return [ResourceRef.of(r.kind, r.id or r.name or "", r.note) for r in self.resources
                if r.state == ResourceState.FOREIGN]

    def endpoints(self) -> dict[str, dict[str, str | None]]:
        """Each live deployment's base URL and the command that prints its key, where known."""
        return {r.id or r.name or "": {"endpoint_url": r.endpoint_url, "key_command": r.key_command}
                for r in self.resources if r.kind == ResourceKind.DEPLOYMENT and r.state == ResourceState.OWNED
                and r.endpoint_url}

    def live_deployment(self) -> str | None:
        """The deployment to talk to (smoke test, evaluation, compare): the newest owned one."""
        names = self.deployment_names
        return names[-1] if names else None
