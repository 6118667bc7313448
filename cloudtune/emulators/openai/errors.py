"""The OpenAI error document every route of the emulator answers with (openai-openapi.yaml, Error)."""

from __future__ import annotations

from typing import Any

from cloudtune.emulators._http import HTTPError


def error_document(message: str, param: str | None, code: str | None = None,
                   type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def not_found(kind: str, ident: str, param: str | None = None) -> HTTPError:
    return HTTPError(404, error_document(f"No such {kind}: {ident}", param))
