"""OpenAI SDK objects -> cloudtune types."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from cloudtune.types import ChatResult, Checkpoint, Job, JobError, JobEvent, JobState

NAME = "openai"
RUN_ID_KEY = "cloudtune_run_id"

# The raw statuses OpenAI documents (the spec's enum) plus ``paused``, which the API returns
# after a pause but the spec's enum lacks. Anything else maps to ``unknown``.
STATUS_MAP: dict[str, JobState] = {
    "validating_files": JobState.VALIDATING,
    "queued": JobState.QUEUED,
    "running": JobState.RUNNING,
    "paused": JobState.PAUSED,
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}
_LINE = re.compile(r"\b(?:line|example)\s+(\d+)", re.IGNORECASE)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def job_error(raw: Any) -> JobError | None:
    if raw is None:
        return None
    message = _get(raw, "message") or ""
    code = _get(raw, "code")
    if not message and not code:
        return None  # the SDK can hand back an empty error object on healthy jobs
    found = _LINE.search(message)
    return JobError(code=code, message=message or str(code), line=int(found.group(1)) if found else None,
                    param=_get(raw, "param"))


def to_job(raw: Any, state: JobState) -> Job:
    metadata = _get(raw, "metadata") or {}
    return Job(
        id=raw.id,
        provider=NAME,
        state=state,
        provider_status=_get(raw, "status"),
        base_model=_get(raw, "model"),
        fine_tuned_model=_get(raw, "fine_tuned_model"),
        created_at=_when(_get(raw, "created_at")),
        finished_at=_when(_get(raw, "finished_at")),
        trained_tokens=_get(raw, "trained_tokens"),
        error=job_error(_get(raw, "error")),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
        estimated_finish=_when(_get(raw, "estimated_finish")),
    )


def to_event(raw: Any) -> JobEvent:
    data = dict(_get(raw, "data") or {})
    kind = _get(raw, "type")
    if kind:
        data.setdefault("type", kind)  # the poller tells metrics from state changes by it
    return JobEvent(
        id=raw.id,
        created_at=_when(_get(raw, "created_at")) or datetime.now(timezone.utc),
        level=_get(raw, "level") or "info",
        message=_get(raw, "message") or "",
        data=data,
    )


def to_checkpoint(raw: Any) -> Checkpoint:
    metrics_raw = _get(raw, "metrics")
    if metrics_raw is not None and not isinstance(metrics_raw, dict):
        metrics_raw = metrics_raw.model_dump() if hasattr(metrics_raw, "model_dump") else dict(metrics_raw)
    metrics = {k: float(v) for k, v in (metrics_raw or {}).items() if isinstance(v, (int, float))}
    return Checkpoint(
        id=raw.id,
        job_id=_get(raw, "fine_tuning_job_id"),
        step=_get(raw, "step_number"),
        created_at=_when(_get(raw, "created_at")),
        model=_get(raw, "fine_tuned_model_checkpoint"),
        metrics=metrics,
    )


def to_chat_result(raw: Any, *, latency_s: float) -> ChatResult:
    """A chat completion (the first choice) -> :class:`ChatResult`."""
    choice = raw.choices[0]
    usage = getattr(raw, "usage", None)
    return ChatResult(
        content=choice.message.content or "",
        model=raw.model,
        finish_reason=choice.finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        latency_s=latency_s,
    )


# OpenAI's messages that report progress, not a change of status (checked against the
# messages the service writes: validation start, checkpoints, model creation, safety evals).
_PROGRESS_PREFIXES = (
    "Validating training file",
    "Validating validation file",
    "Checkpoint created",
    "New fine-tuned model created",
    "Usage policy evaluations",
)


def event_may_change_state(event: JobEvent) -> bool:
    if event.data.get("type") == "metrics":
        return False
    if event.level.value == "error":
        return True
    return not event.message.startswith(_PROGRESS_PREFIXES)
