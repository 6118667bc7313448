"""One emulated fine-tuning job: a planned timeline replayed against the emulator clock.

At creation the whole life of the job is planned as a list of entries, each at
an offset in *active* seconds (time not spent paused) from creation. Whenever
the job is looked at, every entry whose offset has passed is applied in order:
it adds an event (stamped with the time it was due, not the time it was seen,
so display delays can be measured) and may change the job's status. Pausing
freezes the active clock; cancelling or a forced status cuts the plan.
"""

from __future__ import annotations

import math
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudtune.emulators.openai.validation import FileProblem

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class Planned:
    offset: float
    message: str = ""
    level: str = "info"
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # status the job takes when this entry is applied
    action: str | None = None  # "checkpoint" | "succeed" | "fail" | "resolve_hyperparameters"
    error: dict[str, Any] | None = None


@dataclass
class Durations:
    validate_s: float
    queue_s: float
    run_s: float


@dataclass
class JobRecord:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    created_at: float
    method: dict[str, Any]
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    organization: str
    durations: Durations
    plan: list[Planned] = field(default_factory=list)
    next_entry: int = 0
    status: str = "validating_files"
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    error: dict[str, Any] | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    paused_at: float | None = None
    paused_total: float = 0.0
    forced_status: str | None = None
    resolved: dict[str, Any] | None = None  # hyperparameters once "auto" is resolved
    tokens_per_epoch: int = 0
    total_steps: int = 0
    exact_times: dict[str, float] = field(default_factory=dict)  # event id -> emulated time (API shows whole seconds)

    # ------------------------------------------------------------ timeline
    def active_elapsed(self, now: float) -> float:
        frozen_since = self.paused_at if self.paused_at is not None else now
        return max(0.0, frozen_since - self.created_at - self.paused_total)

    def advance(self, now: float, on_apply: Callable[["JobRecord", Planned, float], None]) -> None:
        """Apply every planned entry that is due. ``on_apply`` lets the app create models and
        result files for ``succeed`` entries."""
        if self.forced_status is not None or self.status in TERMINAL:
            return
        elapsed = self.active_elapsed(now)
        while self.next_entry < len(self.plan) and self.plan[self.next_entry].offset <= elapsed:
            entry = self.plan[self.next_entry]
            self.next_entry += 1
            due = self.created_at + self.paused_total + entry.offset
            self.apply(entry, due, on_apply)
            if self.status in TERMINAL:
                break

    def apply(self, entry: Planned, when: float, on_apply: Callable[["JobRecord", Planned, float], None]) -> None:
        if entry.action == "resolve_hyperparameters" and self.resolved is None:
            self.resolved = entry.data.get("hyperparameters")
        if entry.status is not None:
            self.status = entry.status
        if entry.error is not None:
            self.error = entry.error
        on_apply(self, entry, when)
        if entry.message:
            self.add_event(entry.message, when, level=entry.level, type=entry.type, data=entry.data)
        if self.status in TERMINAL and self.finished_at is None:
            self.finished_at = int(when)

    def add_event(self, message: str, when: float, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        # planning details (resolved hyperparameters, token counts) are not event data
        entry_data = {k: v for k, v in (data or {}).items() if k not in ("hyperparameters", "trained_tokens")}
        event_id = new_id("ftevent-")
        self.exact_times[event_id] = when
        self.events.append({
            "object": "fine_tuning.job.event",
            "id": event_id,
            "created_at": int(when),
            "level": level,
            "message": message,
            "data": entry_data,
            "type": type,
        })

    def cut_plan(self) -> None:
        self.plan = self.plan[: self.next_entry]

    # ------------------------------------------------------------ views
    def hyperparameters(self) -> dict[str, Any]:
        kind = self.method["type"]
        given = dict(self.method.get(kind, {}).get("hyperparameters", {}))
        shown = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
        if kind == "dpo":
            shown["beta"] = "auto"
        shown.update(given)
        if self.resolved:
            shown.update({k: v for k, v in self.resolved.items() if shown.get(k) == "auto"})
        return shown

    def estimated_finish(self) -> int | None:
        if self.status not in ("running", "queued") or self.paused_at is not None:
            return None
        d = self.durations
        return int(self.created_at + self.paused_total + d.validate_s + d.queue_s + d.run_s)

    def to_json(self) -> dict[str, Any]:
        hyper = self.hyperparameters()
        kind = self.method["type"]
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": int(self.created_at),
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": self.organization,
            "result_files": list(self.result_files),
            "status": self.forced_status or self.status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": {k: hyper[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
            "trained_tokens": self.trained_tokens,
            "error": self.error,
            "integrations": [],
            "seed": self.seed,
            "estimated_finish": self.estimated_finish(),
            "method": {"type": kind, kind: {"hyperparameters": hyper}},
            "metadata": self.metadata,
        }


def plan_job(
    job: JobRecord,
    *,
    examples: int,
    problem: FileProblem | None,
    problem_param: str = "training_file",
    max_steps: int,
    fail_stage: str | None = None,
    fail_error: dict[str, Any] | None = None,
) -> None:
    """Fill ``job.plan``: validation, queue, training steps with metrics and checkpoints, result."""
    d = job.durations
    plan: list[Planned] = []
    plan.append(Planned(0.0, "Validating training file: " + job.training_file))
    if job.validation_file:
        plan.append(Planned(0.0, "Validating validation file: " + job.validation_file))
    if problem is not None:
        plan.append(Planned(
            d.validate_s, problem.message, level="error", status="failed",
            error={"code": problem.code, "message": problem.message, "param": problem_param},
        ))
        job.plan = _with_fault(plan, job, fail_stage, fail_error)
        return
    hyper = job.hyperparameters()
    epochs = hyper["n_epochs"] if hyper["n_epochs"] != "auto" else (3 if examples >= 30 else 4)
    batch = hyper["batch_size"] if hyper["batch_size"] != "auto" else 1
    resolved = {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": 1.8}
    if job.method["type"] == "dpo":
        resolved["beta"] = 0.1
    steps_per_epoch = max(1, math.ceil(examples / batch))
    total = min(max_steps, steps_per_epoch * epochs)
    job.total_steps = total
    plan.append(Planned(d.validate_s, "Files validated, moving job to queued state", status="queued",
                        action="resolve_hyperparameters", data={"hyperparameters": resolved}))
    start = d.validate_s + d.queue_s
    plan.append(Planned(start, "Fine-tuning job started", status="running"))
    per_epoch = max(1, total // epochs)
    for step in range(1, total + 1):
        offset = start + d.run_s * step / (total + 1)
        progress = step / total
        train_loss = round(2.2 * math.exp(-2.5 * progress) + 0.15 + 0.05 * math.sin(step), 4)
        data: dict[str, Any] = {
            "step": step,
            "train_loss": train_loss,
            "total_steps": total,
            "train_mean_token_accuracy": round(min(0.99, 0.5 + 0.45 * progress), 4),
        }
        if job.validation_file:
            data["valid_loss"] = round(train_loss * 1.08 + 0.02, 4)
            data["valid_mean_token_accuracy"] = round(min(0.98, 0.48 + 0.44 * progress), 4)
        plan.append(Planned(offset, f"Step {step}/{total}: training loss={train_loss:.2f}", type="metrics", data=data))
        if step % per_epoch == 0 or step == total:
            plan.append(Planned(offset, f"Checkpoint created at step {step}", action="checkpoint", data=dict(data)))
    end = start + d.run_s
    plan.append(Planned(end, "New fine-tuned model created", action="succeed",
                        data={"trained_tokens": job.tokens_per_epoch * epochs}))
    plan.append(Planned(end, "The job has successfully completed", status="succeeded"))
    job.plan = _with_fault(plan, job, fail_stage, fail_error)


def _with_fault(plan: list[Planned], job: JobRecord, stage: str | None, error: dict[str, Any] | None) -> list[Planned]:
    """Cut the plan in the middle of ``stage`` and end it with a failure there."""
    if stage is None:
        return plan
    d = job.durations
    windows = {
        "validating_files": (0.0, d.validate_s),
        "queued": (d.validate_s, d.validate_s + d.queue_s),
        "running": (d.validate_s + d.queue_s, d.validate_s + d.queue_s + d.run_s),
    }
    begin, end = windows.get(stage, windows["running"])
    at = begin + (end - begin) / 2
    error = error or {"code": "server_error", "message": "The job failed due to an internal error.", "param": None}
    kept = [entry for entry in plan if entry.offset < at or (entry.offset == at == 0.0)]
    kept.append(Planned(at, "Fine-tuning job failed: " + error["message"], level="error", status="failed", error=error))
    return kept
