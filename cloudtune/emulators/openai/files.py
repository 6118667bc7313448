"""Files and Uploads routes of the OpenAI emulator (``/v1/files``, ``/v1/uploads``), over an
:class:`~cloudtune.emulators.openai.store.OpenAIStore`."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from typing import Any

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.emulators.openai.errors import error_document, not_found
from cloudtune.emulators.openai.jobs import new_id
from cloudtune.emulators.openai.store import OpenAIStore, StoredFile, StoredUpload

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024
MAX_PART_BYTES = 64 * 1024 * 1024


def parse_multipart(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """(form fields, files as name -> (filename, bytes)) of a multipart/form-data body."""
    content_type = request.headers.get("content-type", "")
    if "multipart/form-data" not in content_type:
        raise HTTPError(400, error_document("Expected a multipart/form-data body.", None))
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode("utf-8")
    return fields, files


def check_purpose_and_name(purpose: str | None, filename: str) -> None:
    if purpose not in FILE_PURPOSES:
        raise HTTPError(400, error_document(f"Invalid purpose {purpose!r}; expected one of {', '.join(FILE_PURPOSES)}.", "purpose"))
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise HTTPError(400, error_document("Invalid file format for Fine-Tuning API. Must be .jsonl", "file"))


def register(router: Router, store: OpenAIStore) -> None:  # noqa: C901 - a route table
    """The Files and Uploads routes, over ``store``."""
    clock, settings = store.clock, store.settings

    # ------------------------------------------------------------- files
    def create_file(request: Request) -> Response:
        fields, files = parse_multipart(request)
        if "file" not in files:
            raise HTTPError(400, error_document("Missing required parameter: 'file'.", "file"))
        filename, content = files["file"]
        purpose = fields.get("purpose")
        check_purpose_and_name(purpose, filename)
        if len(content) > MAX_FILE_BYTES:
            raise HTTPError(413, error_document("File is larger than 512 MB; use the Uploads API.", "file"))
        with store.lock:
            stored = store.store_file(filename, purpose or "", content)
            return Response.json(stored.to_json(clock.now()))

    def list_files(request: Request) -> Response:
        purpose = request.arg("purpose")
        with store.lock:
            now = clock.now()
            data = [f.to_json(now) for f in reversed(store.files.values()) if purpose in (None, f.purpose)]
        return Response.json({
            "object": "list", "data": data, "has_more": settings.lists_never_end,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        })

    def file_named(file_id: str) -> StoredFile:
        found = store.files.get(file_id)
        if found is None:
            raise not_found("file", file_id, "file_id")
        return found

    def retrieve_file(request: Request) -> Response:
        with store.lock:
            return Response.json(file_named(request.params["file_id"]).to_json(clock.now()))

    def delete_file(request: Request) -> Response:
        with store.lock:
            stored = file_named(request.params["file_id"])
            del store.files[stored.id]
        return Response.json({"object": "file", "id": stored.id, "deleted": True})

    def file_content(request: Request) -> Response:
        with store.lock:
            stored = file_named(request.params["file_id"])
        if stored.purpose == "fine-tune":
            # the service does not hand training data back
            raise HTTPError(400, error_document("Not allowed to download files of purpose: fine-tune", None))
        return Response(200, stored.content, {"Content-Type": "application/octet-stream"})

    # ------------------------------------------------------------ uploads
    def upload_json(upload: StoredUpload) -> dict[str, Any]:
        return upload.to_json(store.files, clock.now())

    def create_upload(request: Request) -> Response:
        body = request.json()
        for key in ("filename", "purpose", "bytes", "mime_type"):
            if key not in body:
                raise HTTPError(400, error_document(f"Missing required parameter: '{key}'.", key))
        check_purpose_and_name(body["purpose"], body["filename"])
        if not isinstance(body["bytes"], int) or not 0 < body["bytes"] <= MAX_UPLOAD_BYTES:
            raise HTTPError(400, error_document("'bytes' must be between 1 and 8 GB.", "bytes"))
        with store.lock:
            upload = StoredUpload(new_id("upload_"), body["filename"], body["purpose"], body["bytes"],
                                  body["mime_type"], clock.now())
            store.uploads[upload.id] = upload
            return Response.json(upload_json(upload))

    def pending_upload(upload_id: str) -> StoredUpload:
        upload = store.uploads.get(upload_id)
        if upload is None:
            raise not_found("upload", upload_id, "upload_id")
        if upload_json(upload)["status"] != "pending":
            raise HTTPError(400, error_document(f"Upload {upload_id} is {upload_json(upload)['status']}; it takes no more changes.", None))
        return upload

    def add_upload_part(request: Request) -> Response:
        _, files = parse_multipart(request)
        if "data" not in files:
            raise HTTPError(400, error_document("Missing required parameter: 'data'.", "data"))
        data = files["data"][1]
        if len(data) > MAX_PART_BYTES:
            raise HTTPError(400, error_document("A part can be at most 64 MB.", "data"))
        with store.lock:
            upload = pending_upload(request.params["upload_id"])
            part_id = new_id("part_")
            upload.parts[part_id] = data
            return Response.json({
                "object": "upload.part", "id": part_id, "created_at": int(clock.now()), "upload_id": upload.id,
            })

    def complete_upload(request: Request) -> Response:
        body = request.json()
        part_ids = body.get("part_ids")
        if not isinstance(part_ids, list):
            raise HTTPError(400, error_document("Missing required parameter: 'part_ids'.", "part_ids"))
        with store.lock:
            upload = pending_upload(request.params["upload_id"])
            unknown = [p for p in part_ids if p not in upload.parts]
            if unknown:
                raise HTTPError(400, error_document(f"Unknown part id(s): {', '.join(unknown)}", "part_ids"))
            content = b"".join(upload.parts[p] for p in part_ids)
            if len(content) != upload.bytes:
                raise HTTPError(400, error_document(
                    f"The parts add up to {len(content)} bytes but the upload was created for {upload.bytes}.", "part_ids"))
            md5 = body.get("md5")
            if md5 and md5 != hashlib.md5(content).hexdigest():  # noqa: S324 - integrity check the API defines
                raise HTTPError(400, error_document("The md5 checksum does not match the uploaded bytes.", "md5"))
            stored = store.store_file(upload.filename, upload.purpose, content)
            upload.file_id = stored.id
            upload.status = "completed"
            upload.parts.clear()
            return Response.json(upload_json(upload))

    def cancel_upload(request: Request) -> Response:
        with store.lock:
            upload = pending_upload(request.params["upload_id"])
            upload.status = "cancelled"
            upload.parts.clear()
            return Response.json(upload_json(upload))

    router.add("POST", "/v1/files", create_file)
    router.add("GET", "/v1/files", list_files)
    router.add("GET", "/v1/files/{file_id}", retrieve_file)
    router.add("DELETE", "/v1/files/{file_id}", delete_file)
    router.add("GET", "/v1/files/{file_id}/content", file_content)
    router.add("POST", "/v1/uploads", create_upload)
    router.add("POST", "/v1/uploads/{upload_id}/parts", add_upload_part)
    router.add("POST", "/v1/uploads/{upload_id}/complete", complete_upload)
    router.add("POST", "/v1/uploads/{upload_id}/cancel", cancel_upload)
