"""Fine-tuning job routes of the OpenAI emulator (``/v1/fine_tuning/jobs...``), over an
:class:`~cloudtune.emulators.openai.store.OpenAIStore`."""

from __future__ import annotations

import re
from typing import Any

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.emulators.openai.errors import error_document
from cloudtune.emulators.openai.jobs import TERMINAL, Durations, JobRecord, Planned, new_id, plan_job
from cloudtune.emulators.openai.store import EmulatorSettings, OpenAIStore, StoredFile
from cloudtune.emulators.openai.validation import check_training_file
from cloudtune.service_facts import openai_lifecycle as lifecycle

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")
MAX_PAGE = 100


def _limit(request: Request, default: int = 20) -> int:
    raw = request.arg("limit")
    try:
        value = int(raw) if raw is not None else default
    except ValueError as exc:
        raise HTTPError(400, error_document(f"Invalid limit {raw!r}.", "limit")) from exc
    return max(1, min(value, MAX_PAGE))


def page_after(items: list[dict[str, Any]], request: Request, default_limit: int = 20) -> tuple[list[dict], bool]:
    """Cursor pagination over items already in response order (newest first): ``after`` is the
    last id of the previous page, so the page holds what comes after it in that order."""
    after = request.arg("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = _limit(request, default_limit)
    return items[:limit], len(items) > limit



def page(settings: EmulatorSettings, items: list[dict[str, Any]], request: Request,
         default_limit: int = 20) -> tuple[list[dict], bool]:
    """:func:`page_after`, or, with ``lists_never_end``, the first page again and "more" forever."""
    if settings.lists_never_end:
        return items[:_limit(request, default_limit)], True
    return page_after(items, request, default_limit)


# ---------------------------------------------------------------- job creation rules
def check_training_available(settings: EmulatorSettings) -> None:
    """The wind-down (cloudtune.service_facts.openai_lifecycle): job creation ends for everyone on
    2027-01-06, earlier for organizations without recent fine-tuning."""
    if not settings.training_available or lifecycle.today() >= lifecycle.JOB_CREATION_ENDS:
        raise HTTPError(403, error_document("Fine-tuning job creation is not available for your organization. Self-serve "
                                    "fine-tuning is being wound down; see https://platform.openai.com/docs/deprecations.",
                                    None, "training_not_available"))


def fine_tunable_model(fine_tunable: dict[str, tuple[str, tuple[str, ...]]], name: Any) -> str:
    """The snapshot a fine-tuning request's ``model`` names; 400 for an unknown or shut-down model."""
    if not isinstance(name, str) or name not in fine_tunable:
        raise HTTPError(400, error_document(f"Model {name} is not available for fine-tuning or does not exist.", "model",
                                    "model_not_available"))
    shutdown = lifecycle.table_shutdown(name)
    if shutdown is not None and shutdown <= lifecycle.today():
        raise HTTPError(400, error_document(f"Model {name} was shut down on {shutdown} and can no longer be fine-tuned.",
                                    "model", "model_not_available"))
    return fine_tunable[name][0]


def method_of(body: dict[str, Any]) -> dict[str, Any]:
    """The request's training method with checked hyperparameters (a bare ``hyperparameters`` is supervised)."""
    method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": body.get("hyperparameters") or {}}}
    kind = method.get("type")
    if kind not in ("supervised", "dpo"):
        raise HTTPError(400, error_document(f"Method {kind!r} is not supported by this emulator (supervised, dpo).", "method"))
    hyper = dict((method.get(kind) or {}).get("hyperparameters") or {})
    limits = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (0, None), "beta": (0, 2)}
    for key, value in hyper.items():
        if key not in limits:
            raise HTTPError(400, error_document(f"Unknown hyperparameter {key!r} for method {kind}.", f"method.{kind}.hyperparameters"))
        if value == "auto":
            continue
        low, high = limits[key]
        if not isinstance(value, (int, float)) or value <= low and key in ("learning_rate_multiplier", "beta") \
                or value < low or (high is not None and value > high):
            raise HTTPError(400, error_document(f"Invalid value for {key}: {value!r}.", f"method.{kind}.hyperparameters.{key}"))
    return {"type": kind, kind: {"hyperparameters": hyper}}


def usable_file(files: dict[str, StoredFile], file_id: Any, param: str) -> StoredFile:
    stored = files.get(file_id) if isinstance(file_id, str) else None
    if stored is None:
        raise HTTPError(400, error_document(f"invalid {param}: {file_id}", param, "invalid_file"))
    if stored.purpose != "fine-tune":
        raise HTTPError(400, error_document(f"File {file_id} has purpose {stored.purpose!r}; fine-tuning needs 'fine-tune'.", param))
    # a file still being processed is accepted (the file status is deprecated in the spec); one that
    # failed processing is not
    if stored.problem is not None:
        raise HTTPError(400, error_document(f"File {file_id} could not be processed: {stored.problem}", param, "invalid_file"))
    return stored


def register(router: Router, store: OpenAIStore) -> None:  # noqa: C901 - a route table
    """The fine-tuning job routes, over ``store``."""
    clock, settings = store.clock, store.settings

    def create_job(request: Request) -> Response:
        body = request.json()
        check_training_available(settings)
        model = fine_tunable_model(store.fine_tunable, body.get("model"))
        method = method_of(body)
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or not 1 <= len(suffix) <= 64):
            raise HTTPError(400, error_document("'suffix' must be 1 to 64 characters.", "suffix"))
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16
                                     or any(not isinstance(v, str) or len(v) > 512 or len(k) > 64
                                            for k, v in metadata.items())):
            raise HTTPError(400, error_document("'metadata' takes at most 16 string pairs (keys <= 64, values <= 512 chars).",
                                        "metadata"))
        with store.lock:
            training = usable_file(store.files, body.get("training_file"), "training_file")
            validation = (usable_file(store.files, body["validation_file"], "validation_file")
                          if body.get("validation_file") else None)
            fault = store.faults.take("POST /v1/fine_tuning/jobs", kinds=("fail_job",))
            s = settings
            job = JobRecord(
                id=new_id("ftjob-"), model=model, training_file=training.id,
                validation_file=validation.id if validation else None, created_at=clock.now(), method=method,
                suffix=suffix, seed=int(body.get("seed") if body.get("seed") is not None else 42), metadata=metadata,
                organization=s.organization, durations=Durations(s.validate_s, s.queue_s, s.run_s),
            )
            summary = check_training_file(training.content, method=method["type"], min_examples=s.min_examples)
            problem, param = summary.problem, "training_file"
            if problem is None and validation is not None:
                checked = check_training_file(validation.content, method=method["type"], min_examples=1)
                problem, param = checked.problem, "validation_file"
            job.tokens_per_epoch = summary.tokens
            fail_error = None
            if fault is not None:
                fail_error = {"code": fault.code or "server_error",
                              "message": fault.message or "The job failed due to an internal error.", "param": None}
            plan_job(job, examples=len(summary.examples), problem=problem, problem_param=param,
                     max_steps=s.max_steps, fail_stage=(fault.stage or "running") if fault else None,
                     fail_error=fail_error)
            job.add_event("Created fine-tuning job", job.created_at)
            store.jobs[job.id] = job
            store.job(job.id)
            return Response.json(job.to_json())

    def list_jobs(request: Request) -> Response:
        wanted: dict[str, str] = {}
        null_metadata = request.arg("metadata") == "null"
        for key, values in request.query.items():
            found = _METADATA_KEY.match(key)
            if found and not settings.ignores_metadata_filter:
                wanted[found.group(1)] = values[-1]
        with store.lock:
            jobs = [store.job(job_id) for job_id in list(store.jobs)]
            data = [
                job.to_json() for job in reversed(jobs)
                if (not null_metadata or not job.metadata)
                and all((job.metadata or {}).get(k) == v for k, v in wanted.items())
            ]
        listed, more = page(settings, data, request)
        # a misbehaving API that never stops saying has_more (the client's scan must still be bounded)
        return Response.json({"object": "list", "data": listed, "has_more": more or settings.endless_has_more})

    def retrieve_job(request: Request) -> Response:
        with store.lock:
            return Response.json(store.job(request.params["job_id"]).to_json())

    def cancel_job(request: Request) -> Response:
        with store.lock:
            job = store.job(request.params["job_id"])
            if job.status in TERMINAL:
                raise HTTPError(400, error_document(f"Job has already completed: status {job.status}.", None, "invalid_request_error"))
            now = clock.now()
            job.forced_status = None
            job.paused_at = None
            job.cut_plan()
            job.status = "cancelled"
            job.finished_at = int(now)
            job.add_event("Fine-tuning job cancelled", now)
            return Response.json(job.to_json())

    def pause_job(request: Request) -> Response:
        with store.lock:
            job = store.job(request.params["job_id"])
            if job.status != "running" or job.forced_status:
                raise HTTPError(400, error_document(f"Only running jobs can be paused; this one is {job.forced_status or job.status}.", None))
            now = clock.now()
            job.paused_at = now
            job.status = "paused"
            job.add_event("Fine-tuning job paused", now)
            return Response.json(job.to_json())

    def resume_job(request: Request) -> Response:
        with store.lock:
            job = store.job(request.params["job_id"])
            if job.status != "paused" or job.paused_at is None:
                raise HTTPError(400, error_document(f"Only paused jobs can be resumed; this one is {job.status}.", None))
            now = clock.now()
            job.paused_total += now - job.paused_at
            job.paused_at = None
            job.status = "running"
            job.add_event("Fine-tuning job resumed", now)
            return Response.json(job.to_json())

    def list_job_events(request: Request) -> Response:
        with store.lock:
            events = list(reversed(store.job(request.params["job_id"]).events))
        listed, more = page(settings, events, request)
        return Response.json({"object": "list", "data": listed, "has_more": more})

    def list_job_checkpoints(request: Request) -> Response:
        with store.lock:
            checkpoints = list(reversed(store.job(request.params["job_id"]).checkpoints))
        listed, more = page(settings, checkpoints, request, default_limit=10)
        return Response.json({
            "object": "list", "data": listed, "has_more": more,
            "first_id": listed[0]["id"] if listed else None, "last_id": listed[-1]["id"] if listed else None,
        })

    router.add("POST", "/v1/fine_tuning/jobs", create_job)
    router.add("GET", "/v1/fine_tuning/jobs", list_jobs)
    router.add("GET", "/v1/fine_tuning/jobs/{job_id}", retrieve_job)
    router.add("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", cancel_job)
    router.add("POST", "/v1/fine_tuning/jobs/{job_id}/pause", pause_job)
    router.add("POST", "/v1/fine_tuning/jobs/{job_id}/resume", resume_job)
    router.add("GET", "/v1/fine_tuning/jobs/{job_id}/events", list_job_events)
    router.add("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", list_job_checkpoints)


# ---------------------------------------------------------------- control
def force_status(store: OpenAIStore, job_id: str, status: str | None) -> dict[str, Any]:
    """Make the job report ``status`` from now on (its timeline stops). Terminal statuses are
    applied for real (a model appears for ``succeeded``); ``None`` releases a forced status."""
    with store.lock:
        job = store.job(job_id)
        now = store.clock.now()
        on_entry = store.on_job_entry
        if status is None:
            # a forced status froze the timeline (unless the job was paused anyway): thaw it
            if job.forced_status is not None and job.paused_at is not None and job.status != "paused":
                job.paused_total += now - job.paused_at
                job.paused_at = None
            job.forced_status = None
        elif status == "succeeded":
            job.forced_status = None
            remaining = [e for e in job.plan[job.next_entry:] if e.action != "fail" and e.status != "failed"]
            for entry in remaining:
                job.apply(entry, now, on_entry)
            job.next_entry = len(job.plan)
            if job.status != "succeeded":  # plan had ended in a failure: finish it anyway
                job.apply(Planned(0, "New fine-tuned model created", action="succeed"), now, on_entry)
                job.apply(Planned(0, "The job has successfully completed", status="succeeded"), now, on_entry)
        elif status in ("failed", "cancelled"):
            job.forced_status = None
            job.cut_plan()
            error = {"code": "forced", "message": "Status forced by the emulator control API.", "param": None}
            job.apply(Planned(0, f"Fine-tuning job {status} (forced)", level="error" if status == "failed" else "info",
                              status=status, error=error if status == "failed" else None), now, on_entry)
        else:
            if job.paused_at is None:
                job.paused_at = now  # freeze the timeline while the status is forced
            job.forced_status = status
        return job.to_json()
