"""What the OpenAI emulator remembers, and the state changes more than one route needs.

One :class:`OpenAIStore` holds the files, uploads, jobs and fine-tuned models, with the
collaborators the routes share: the settings, the emulator clock, the fault injector and the
lock. Route modules (:mod:`.files`, :mod:`.job_routes`, :mod:`.model_routes`) register their
handlers over a store; the app only builds it and dispatches.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from cloudtune.emulators._http import EmulatorClock, FaultInjector
from cloudtune.emulators.openai.errors import not_found
from cloudtune.emulators.openai.jobs import JobRecord, Planned, new_id

UPLOAD_TTL_S = 3600  # a pending upload expires an hour after it was created (Uploads API)


@dataclass
class EmulatorSettings:
    """Timeline and behaviour knobs. Durations are emulated seconds (scaled by the clock speed)."""

    api_key: str | None = None  # None: any non-empty bearer key is accepted
    validate_s: float = 1.0
    queue_s: float = 1.0
    run_s: float = 6.0
    file_processing_s: float = 0.5
    min_examples: int = 10
    max_steps: int = 40
    organization: str = "org-emulator"
    organization_slug: str = "emulator"
    training_available: bool = True  # False: this organization is past the fine-tuning wind-down (403)
    endless_has_more: bool = False  # True: job listings always answer has_more
    # True: every list (jobs, events, checkpoints, files) answers its first page again with has_more,
    # whatever the cursor, as a static mock of the published OpenAPI spec does
    lists_never_end: bool = False
    ignores_metadata_filter: bool = False  # True: job listings ignore metadata[...] (clients must filter again)

    @classmethod
    def for_job_duration(cls, seconds: float, **overrides: Any) -> "EmulatorSettings":
        """Split a whole job duration: 10% validating, 10% queued, 80% training."""
        return cls(validate_s=seconds * 0.1, queue_s=seconds * 0.1, run_s=seconds * 0.8, **overrides)

    def public(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["api_key"] = "set" if self.api_key else None  # never echo the key
        return shown


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: float
    content: bytes
    ready_at: float  # status is "uploaded" until then, "processed" (or "error") after

    @property
    def problem(self) -> str | None:
        """Why processing fails: OpenAI refuses a UTF-8 byte-order mark in fine-tuning JSONL."""
        if self.purpose == "fine-tune" and self.content.startswith(b"\xef\xbb\xbf"):
            return "The file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM."
        return None

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return "uploaded"
        return "error" if self.problem else "processed"

    def to_json(self, now: float) -> dict[str, Any]:
        # ``status`` / ``status_details`` are deprecated in the spec (openai-openapi.yaml, OpenAIFile)
        # but still answered, as the service does
        status = self.status(now)
        answer = {
            "object": "file",
            "id": self.id,
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": status,
        }
        if status == "error" and self.problem:
            answer["status_details"] = self.problem
        return answer


@dataclass
class StoredUpload:
    id: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    created_at: float
    status: str = "pending"
    parts: dict[str, bytes] = field(default_factory=dict)
    file_id: str | None = None

    def to_json(self, files: dict[str, StoredFile], now: float) -> dict[str, Any]:
        stored = files.get(self.file_id) if self.file_id else None
        status = self.status
        if status == "pending" and now > self.created_at + UPLOAD_TTL_S:
            status = "expired"
        return {
            "object": "upload",
            "id": self.id,
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "expires_at": int(self.created_at + UPLOAD_TTL_S),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": status,
            "file": stored.to_json(now) if stored else None,
        }


def fine_tunable_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name or alias -> (snapshot name, methods), from the dated model table the provider reads too."""
    from cloudtune.service_facts.openai_models import FINE_TUNABLE

    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for snapshot, aliases, _context, _tokenizer, _price, methods, _notes in FINE_TUNABLE:
        for name in (snapshot, *aliases):
            table[name] = (snapshot, tuple(methods))
    return table


class OpenAIStore:
    """All emulated resources. Route handlers hold ``lock`` while they read or change them."""

    def __init__(self, settings: EmulatorSettings, *, clock: EmulatorClock, faults: FaultInjector,
                 lock: threading.RLock) -> None:
        self.settings = settings
        self.clock = clock
        self.faults = faults
        self.lock = lock
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, StoredUpload] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.models: dict[str, dict[str, Any]] = {}  # fine-tuned models: id -> {object, job_id...}
        self.fine_tunable = fine_tunable_table()
        self.chat_requests = 0

    # ------------------------------------------------------------- files
    def store_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        now = self.clock.now()
        stored = StoredFile(new_id("file-"), filename, purpose, now, content, now + self.settings.file_processing_s)
        self.files[stored.id] = stored
        return stored

    # -------------------------------------------------------------- jobs
    def job(self, job_id: str) -> JobRecord:
        """The job, brought up to the emulator clock (callers hold ``lock``)."""
        found = self.jobs.get(job_id)
        if found is None:
            raise not_found("job", job_id, "fine_tuning_job_id")
        found.advance(self.clock.now(), self.on_job_entry)
        return found

    def advance_jobs(self) -> None:
        """Bring every job up to the emulator clock (its model may appear)."""
        for job_id in list(self.jobs):
            self.job(job_id)

    def on_job_entry(self, job: JobRecord, entry: Planned, when: float) -> None:
        """What a planned entry leaves behind besides its event: checkpoints, the model, the results file."""
        if entry.action == "checkpoint":
            step = int(entry.data["step"])
            metrics = {k: v for k, v in entry.data.items() if k not in ("total_steps",)}
            job.checkpoints.append({
                "object": "fine_tuning.job.checkpoint",
                "id": new_id("ftckpt_"),
                "created_at": int(when),
                "fine_tuned_model_checkpoint": f"{self.model_name_for(job)}:ckpt-step-{step}",
                "fine_tuning_job_id": job.id,
                "step_number": step,
                "metrics": {"step": float(step), **metrics},
            })
        elif entry.action == "succeed":
            job.fine_tuned_model = self.model_name_for(job)
            job.trained_tokens = int(entry.data.get("trained_tokens", 0))
            self.register_model(job.fine_tuned_model, job, when)
            csv = "step,train_loss,train_accuracy\n" + "".join(
                f"{e['data']['step']},{e['data']['train_loss']},{e['data'].get('train_mean_token_accuracy', '')}\n"
                for e in job.events if e["type"] == "metrics"
            )
            result = self.store_file("step_metrics.csv", "fine-tune-results", csv.encode())
            job.result_files.append(result.id)

    def model_name_for(self, job: JobRecord) -> str:
        return f"ft:{job.model}:{self.settings.organization_slug}:{job.suffix or ''}:{job.id[-8:].lower()}"

    def register_model(self, model_id: str, job: JobRecord, when: float) -> None:
        self.models[model_id] = {"id": model_id, "object": "model", "created": int(when),
                                 "owned_by": self.settings.organization, "job_id": job.id}

    # ----------------------------------------------------------- summary
    def summary(self) -> dict[str, Any]:
        """What is on the emulator (``/_emulator/state``); no key. Callers hold ``lock``."""
        self.advance_jobs()
        return {
            "jobs": len(self.jobs),
            "files": len(self.files),
            "uploads": len(self.uploads),
            "models": len(self.models),
            "chat_requests": self.chat_requests,
            "job_statuses": {job.id: job.forced_status or job.status for job in self.jobs.values()},
            "job_ids": list(self.jobs),
            "file_ids": list(self.files),
            "files_by_purpose": {p: sum(f.purpose == p for f in self.files.values())
                                 for p in sorted({f.purpose for f in self.files.values()})},
            "upload_statuses": {u.id: u.status for u in self.uploads.values()},
            "model_ids": list(self.models),
            "settings": self.settings.public(),
        }
