"""A stateful loopback emulator of the OpenAI fine-tuning API, for the official SDK.

Routes (all under ``/v1``, bearer key required): files, uploads, fine-tuning jobs
(events, checkpoints, cancel, pause, resume), models (list, retrieve, delete)
and chat completions with deterministic answers. Jobs run on the emulator clock
(see :mod:`cloudtune.emulators.openai.jobs`).

Control routes for tests and CI dry runs, on top of the base ones
(``/_emulator/faults``, ``/_emulator/advance``, ``/_emulator/state``):

* ``POST /_emulator/openai/jobs/{id}/status`` ``{"status": "..."}``: force the raw
  status a job reports (``null`` releases it);
* ``POST /_emulator/openai/settings``: change timeline durations for jobs created next.

Faults of kind ``fail_job`` (``stage`` = ``validating_files`` | ``queued`` |
``running``) make the next created job fail in the middle of that stage.
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

from cloudtune.emulators._http import EmulatorApp, EmulatorClock, HTTPError, Request, Response
from cloudtune.emulators.openai.files import FilesRoutes, StoredFile, StoredUpload, _error
from cloudtune.emulators.openai.job_routes import JobRoutes
from cloudtune.emulators.openai.jobs import JobRecord, new_id
from cloudtune.service_facts import openai_lifecycle as lifecycle

# Base models the emulator serves and fine-tunes (aliases resolve to the snapshot, as the service does).
BASE_MODEL_CREATED = 1_721_172_741


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


def _fine_tunable() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name or alias -> (snapshot name, methods), from the dated model table the provider reads too."""
    from cloudtune.service_facts.openai_models import FINE_TUNABLE

    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for snapshot, aliases, _context, _tokenizer, _price, methods, _notes in FINE_TUNABLE:
        for name in (snapshot, *aliases):
            table[name] = (snapshot, tuple(methods))
    return table


class OpenAIEmulator(FilesRoutes, JobRoutes, EmulatorApp):
    def __init__(self, settings: EmulatorSettings | None = None, *, clock: EmulatorClock | None = None) -> None:
        super().__init__(clock=clock)
        self.settings = settings or EmulatorSettings()
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, StoredUpload] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.models: dict[str, dict[str, Any]] = {}  # fine-tuned models: id -> {object, job_id...}
        self.fine_tunable = _fine_tunable()
        self.chat_requests = 0
        self._register_files()
        self._register_jobs()
        r = self.router
        r.add("GET", "/v1/models", self.list_models)
        r.add("GET", "/v1/models/{model}", self.retrieve_model)
        r.add("DELETE", "/v1/models/{model}", self.delete_model)
        r.add("POST", "/v1/chat/completions", self.chat_completion)

    # ------------------------------------------------------------- hooks
    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            message = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
                       "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return Response.json(_error(message, None, None), 401)
        expected = self.settings.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            # the service echoes a masked key; we echo nothing of it
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            return Response.json(_error(message, None, "invalid_api_key"), 401)
        return None

    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/openai/"):
            response = self._openai_control(request)
        else:
            response = super().handle(request)
        response.headers.setdefault("x-request-id", "req_" + uuid.uuid4().hex)
        return response

    def control_state(self) -> dict[str, Any]:
        for job_id in list(self.jobs):
            self.job(job_id)
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

    def _openai_control(self, request: Request) -> Response:
        found = re.match(r"^/_emulator/openai/jobs/([^/]+)/status$", request.path)
        try:
            if found and request.method == "POST":
                return Response.json(self.force_status(found.group(1), request.json().get("status")))
            if request.path == "/_emulator/openai/settings":
                if request.method == "POST":
                    known = {f.name for f in fields(EmulatorSettings)}
                    changes = request.json()
                    unknown = set(changes) - known
                    if unknown:
                        return Response.json({"error": f"unknown settings: {sorted(unknown)}"}, 400)
                    with self.lock:
                        for key, value in changes.items():
                            setattr(self.settings, key, value)
                return Response.json(self.settings.public())
        except HTTPError as err:
            return Response.json(err.payload, err.status, err.headers)
        return Response.json({"error": "unknown control path"}, 404)

    # ------------------------------------------------------------ models
    def check_training_available(self) -> None:
        """The wind-down (cloudtune.service_facts.openai_lifecycle): job creation ends for everyone on
        2027-01-06, earlier for organizations without recent fine-tuning."""
        if not self.settings.training_available or lifecycle.today() >= lifecycle.JOB_CREATION_ENDS:
            raise HTTPError(403, _error("Fine-tuning job creation is not available for your organization. Self-serve "
                                        "fine-tuning is being wound down; see https://platform.openai.com/docs/deprecations.",
                                        None, "training_not_available"))

    def fine_tunable_model(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self.fine_tunable:
            raise HTTPError(400, _error(f"Model {name} is not available for fine-tuning or does not exist.", "model",
                                        "model_not_available"))
        shutdown = lifecycle.table_shutdown(name)
        if shutdown is not None and shutdown <= lifecycle.today():
            raise HTTPError(400, _error(f"Model {name} was shut down on {shutdown} and can no longer be fine-tuned.",
                                        "model", "model_not_available"))
        return self.fine_tunable[name][0]

    def register_model(self, model_id: str, job: JobRecord, when: float) -> None:
        self.models[model_id] = {"id": model_id, "object": "model", "created": int(when),
                                 "owned_by": self.settings.organization, "job_id": job.id}

    def _checkpoint_model(self, model_id: str) -> dict[str, Any] | None:
        """A checkpoint's model id (``ft:...:ckpt-step-N``) is served like a model while its job's model
        exists (https://platform.openai.com/docs/guides/fine-tuning, checkpoints)."""
        if ":ckpt-step-" not in model_id:
            return None
        final = model_id.rsplit(":ckpt-step-", 1)[0]
        record = self.models.get(final)
        job = self.jobs.get(record["job_id"]) if record else None
        if job is None or not any(c["fine_tuned_model_checkpoint"] == model_id for c in job.checkpoints):
            return None
        return {**record, "id": model_id}

    def _model_json(self, model_id: str) -> dict[str, Any] | None:
        checkpoint = self._checkpoint_model(model_id)
        if model_id in self.models or checkpoint is not None:
            found = {k: v for k, v in (checkpoint or self.models[model_id]).items() if k != "job_id"}
        elif model_id in self.fine_tunable:
            found = {"id": model_id, "object": "model", "created": BASE_MODEL_CREATED, "owned_by": "system"}
        else:
            return None
        shutdown = lifecycle.table_shutdown(model_id)  # fine-tunes go dark with their base
        if shutdown is not None:
            found["shutdown_date"] = shutdown.isoformat()
        return found

    def list_models(self, request: Request) -> Response:
        with self.lock:
            for job_id in list(self.jobs):
                self.job(job_id)
            ids = list(self.fine_tunable) + list(self.models)
            return Response.json({"object": "list", "data": [self._model_json(i) for i in ids]})

    def _model_not_found(self, model_id: str) -> HTTPError:
        return HTTPError(404, _error(f"The model '{model_id}' does not exist or you do not have access to it.",
                                     None, "model_not_found"))

    def retrieve_model(self, request: Request) -> Response:
        model_id = request.params["model"]
        with self.lock:
            for job_id in list(self.jobs):
                self.job(job_id)
            found = self._model_json(model_id)
        if found is None:
            raise self._model_not_found(model_id)
        return Response.json(found)

    def delete_model(self, request: Request) -> Response:
        model_id = request.params["model"]
        with self.lock:
            if model_id in self.fine_tunable:
                raise HTTPError(403, _error("You have insufficient permissions for this operation. "
                                            "Only models owned by your organization can be deleted.", None))
            if self.models.pop(model_id, None) is None:
                raise self._model_not_found(model_id)
        return Response.json({"id": model_id, "object": "model", "deleted": True})

    # -------------------------------------------------------------- chat
    def chat_completion(self, request: Request) -> Response:
        body = request.json()
        model_id = body.get("model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, _error("'messages' must be a non-empty list.", "messages"))
        with self.lock:
            self.chat_requests += 1
            if not isinstance(model_id, str) or self._model_json(model_id) is None:
                raise self._model_not_found(str(model_id))
            learned = self._learned_answers(model_id)
        from cloudtune.emulators.openai.chat import reply

        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        content, finish, prompt_tokens, completion_tokens = reply(model_id, messages, learned, limit)
        return Response.json({
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(self.clock.now()),
            "model": model_id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "service_tier": "default",
            "system_fingerprint": "fp_cloudtune_emulator",
        })

    def _learned_answers(self, model_id: str) -> dict[str, str]:
        """What a fine-tuned model "learned": last user message -> assistant reply of its training data."""
        record = self.models.get(model_id) or self._checkpoint_model(model_id)
        job = self.jobs.get(record["job_id"]) if record else None
        stored = self.files.get(job.training_file) if job else None
        if stored is None:
            return {}
        from cloudtune.emulators.openai.chat import learned_answers

        return learned_answers(stored.content)

    def snapshot(self) -> dict[str, Any]:
        """The control state as JSON-safe data (used by tests in-process)."""
        with self.lock:
            return json.loads(json.dumps(self.control_state()))
