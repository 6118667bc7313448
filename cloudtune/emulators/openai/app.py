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

The app builds one :class:`~cloudtune.emulators.openai.store.OpenAIStore` and registers the
route modules over it (:mod:`.files`, :mod:`.job_routes`, :mod:`.model_routes`); here are only
the bearer check, the error shape, the control routes and dispatch.

Faults of kind ``fail_job`` (``stage`` = ``validating_files`` | ``queued`` |
``running``) make the next created job fail in the middle of that stage.
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from dataclasses import fields
from typing import Any

from cloudtune.emulators._http import EmulatorApp, EmulatorClock, HTTPError, Request, Response
from cloudtune.emulators.openai import files as file_routes
from cloudtune.emulators.openai import job_routes, model_routes
from cloudtune.emulators.openai.errors import error_document
from cloudtune.emulators.openai.jobs import JobRecord
from cloudtune.emulators.openai.model_routes import BASE_MODEL_CREATED
from cloudtune.emulators.openai.store import EmulatorSettings, OpenAIStore, StoredFile, StoredUpload

__all__ = ["BASE_MODEL_CREATED", "EmulatorSettings", "OpenAIEmulator"]


class OpenAIEmulator(EmulatorApp):
    def __init__(self, settings: EmulatorSettings | None = None, *, clock: EmulatorClock | None = None) -> None:
        super().__init__(clock=clock)
        self.store = OpenAIStore(settings or EmulatorSettings(), clock=self.clock, faults=self.faults, lock=self.lock)
        file_routes.register(self.router, self.store)
        job_routes.register(self.router, self.store)
        model_routes.register(self.router, self.store)

    # ------------------------------------------- in-process access (tests, the fault matrix)
    @property
    def settings(self) -> EmulatorSettings:
        return self.store.settings

    @property
    def files(self) -> dict[str, StoredFile]:
        return self.store.files

    @property
    def uploads(self) -> dict[str, StoredUpload]:
        return self.store.uploads

    @property
    def jobs(self) -> dict[str, JobRecord]:
        return self.store.jobs

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.store.models

    @property
    def chat_requests(self) -> int:
        return self.store.chat_requests

    def job(self, job_id: str) -> JobRecord:
        """The job, brought up to the emulator clock (callers hold ``self.lock``)."""
        return self.store.job(job_id)

    def store_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        return self.store.store_file(filename, purpose, content)

    def force_status(self, job_id: str, status: str | None) -> dict[str, Any]:
        """See :func:`cloudtune.emulators.openai.job_routes.force_status`."""
        return job_routes.force_status(self.store, job_id, status)

    def snapshot(self) -> dict[str, Any]:
        """The control state as JSON-safe data (used by tests in-process)."""
        with self.lock:
            return json.loads(json.dumps(self.control_state()))

    # ------------------------------------------------------------- hooks
    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            message = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
                       "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return Response.json(error_document(message, None, None), 401)
        expected = self.store.settings.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            # the service echoes a masked key; we echo nothing of it
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            return Response.json(error_document(message, None, "invalid_api_key"), 401)
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
        return self.store.summary()

    def _openai_control(self, request: Request) -> Response:
        found = re.match(r"^/_emulator/openai/jobs/([^/]+)/status$", request.path)
        try:
            if found and request.method == "POST":
                return Response.json(self.force_status(found.group(1), request.json().get("status")))
            if request.path == "/_emulator/openai/settings":
                settings = self.store.settings
                if request.method == "POST":
                    known = {f.name for f in fields(EmulatorSettings)}
                    changes = request.json()
                    unknown = set(changes) - known
                    if unknown:
                        return Response.json({"error": f"unknown settings: {sorted(unknown)}"}, 400)
                    with self.lock:
                        for key, value in changes.items():
                            setattr(settings, key, value)
                return Response.json(settings.public())
        except HTTPError as err:
            return Response.json(err.payload, err.status, err.headers)
        return Response.json({"error": "unknown control path"}, 404)
