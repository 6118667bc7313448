"""Azure OpenAI data plane (``https://<account>.openai.azure.com/openai/...``).

Two surfaces, as the service has them: the GA v1 surface ``/openai/v1/...`` (no api-version,
the plain ``OpenAI`` client) and the dated one ``/openai/...?api-version=YYYY-MM-DD``. Jobs live in
:mod:`cloudtune.emulators.azure._aoai_jobs` (version gating, training types, pause states). Azure's
differences from OpenAI are kept on purpose because they are what the provider must cope with:
statuses ``pending`` / ``notRunning``, null fields (``finished_at``, ``fine_tuned_model``,
``estimated_finish``, ``trained_tokens``, ``organization_id``), chat through a deployment, no
``DELETE /models/{id}`` (a model goes with its job), and the refusal (409) to delete a fine-tuned
model that still has a deployment (a ``Deleting`` one included).
"""

from __future__ import annotations

import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import Request, Response, Router
from cloudtune.emulators.azure import _aoai_jobs
from cloudtune.emulators.azure._aoai_jobs import advance, api_version, err  # noqa: F401 - advance re-exported
from cloudtune.emulators.azure._arm_cs import deployment_state, purge
from cloudtune.emulators.azure._hosts import chat_completion

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store

_err = err


def _hex() -> str:
    return uuid.uuid4().hex


def register(router: Router, store: "Store") -> None:  # noqa: C901 - a route table
    """The Azure OpenAI data plane (files, jobs, models, chat) on both surfaces, over ``store``."""

    def account_of(request: Request) -> str:
        account = request.params["__label"]
        if account not in store.accounts:
            raise _err(404, "ResourceNotFound", f"Azure OpenAI resource {account} not found.")
        return account

    # ------------------------------------------------------------------ files
    def file_json(item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in ("id", "object", "bytes", "created_at", "filename", "purpose", "status")} | {
            "status_details": None}

    def create_file(request: Request) -> Response:
        account = account_of(request)
        ctype = request.headers.get("content-type", "")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.body)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields or fields.get("purpose", (None, b""))[1].decode() != "fine-tune":
            raise _err(400, "invalidPayload", "A 'file' part and purpose 'fine-tune' are required.")
        filename, content = fields["file"]
        file_id = f"file-{_hex()}"
        store.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(store.now),
                                "filename": filename or "upload.jsonl", "purpose": "fine-tune", "status": "processed",
                                "content": content, "account": account}
        return Response.json(file_json(store.files[file_id]), 201)

    def get_file(request: Request) -> Response:
        item = store.files.get(request.params["file_id"])
        if item is None:
            raise _err(404, "fileNotFound", f"File {request.params['file_id']} not found.")
        return Response.json(file_json(item))

    def delete_file(request: Request) -> Response:
        if store.files.pop(request.params["file_id"], None) is None:
            raise _err(404, "fileNotFound", f"File {request.params['file_id']} not found.")
        return Response.json({"id": request.params["file_id"], "object": "file", "deleted": True})

    def list_files(request: Request) -> Response:
        # AzureListFilesResponse (azure-openai-v1.yaml): one page, every file, has_more false. Without
        # has_more the openai SDK's cursor pager asks again ``after`` the last id, page after page.
        purpose = request.arg("purpose")
        data = [file_json(f) for f in store.files.values() if not purpose or f.get("purpose") == purpose]
        return Response.json({"object": "list", "data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    for prefix in ("/openai", "/openai/v1"):
        router.add("POST", f"{prefix}/files", create_file)
        router.add("GET", f"{prefix}/files", list_files)
        router.add("GET", f"{prefix}/files/{{file_id}}", get_file)
        router.add("DELETE", f"{prefix}/files/{{file_id}}", delete_file)

    _aoai_jobs.register(router, store, account_of, _page)

    # ----------------------------------------------------------------- models
    def live_model(model: str) -> dict[str, Any]:
        item = store.ft_models.get(model)
        if item is None or item.get("deleted"):
            raise _err(404, "NotFound", f"The model '{model}' does not exist.")
        return item

    def get_model(request: Request) -> Response:
        item = live_model(request.params["model"])
        return Response.json({"id": request.params["model"], "object": "model", "created_at": item["created_at"],
                              "status": "succeeded", "fine_tune": item["job_id"],
                              "capabilities": {"fine_tune": False, "inference": True, "chat_completion": True}})

    for prefix in ("/openai", "/openai/v1"):
        # GET only: the v1 spec has no DELETE /models/{id}; a model is deleted with its job
        router.add("GET", f"{prefix}/models/{{model}}", get_model)

    # ------------------------------------------------------------------- chat
    def chat(request: Request) -> Response:
        account = account_of(request)
        purge(store)
        body = request.json()
        # v1: the deployment is named in the body's "model"; dated: in the path
        deployment = request.params.get("deployment") or str(body.get("model") or "")
        dep = store.cs_deployments.get((account, deployment))
        if dep is None or deployment_state(store, dep) != "Succeeded":
            raise _err(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created "
                       "the deployment within the last 5 minutes, please wait a moment and try again.")
        return Response.json(chat_completion(dep["model"], body.get("messages") or []))

    router.add("POST", "/openai/deployments/{deployment}/chat/completions", chat)
    router.add("POST", "/openai/v1/chat/completions", chat)


def _page(items: list[dict[str, Any]], request: Request) -> Response:
    after = request.arg("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(request.arg("limit") or 20)
    return Response.json({"object": "list", "data": items[:limit], "has_more": len(items) > limit})
