"""The small hosts: Entra ID tokens, blob storage, and serverless endpoint chat."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.emulators.azure._state import TENANT_ID, error_body, new_id

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store


# ---------------------------------------------------------------------------- login


def register_login(router: Router) -> None:
    """Entra ID: OpenID discovery and client-credential tokens (any non-empty secret)."""
    base = "https://login.microsoftonline.com"

    def openid_configuration(request: Request) -> Response:
        tenant = request.params["tenant"]
        return Response.json({
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/{TENANT_ID if tenant in ('organizations', 'common') else tenant}/v2.0",
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        })

    def instance_discovery(request: Request) -> Response:
        return Response.json({
            "tenant_discovery_endpoint": f"{base}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
                          "aliases": ["login.microsoftonline.com", "login.windows.net", "sts.windows.net"]}],
        })

    def token(request: Request) -> Response:
        from urllib.parse import parse_qs

        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        if not form.get("client_id") or not (form.get("client_secret") or form.get("client_assertion")):
            return Response.json({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
                                  "error_codes": [7000215]}, 401)
        scope = form.get("scope", "")
        claims = {"aud": scope.split(" ")[0].replace("/.default", ""), "tid": request.params["tenant"],
                  "appid": form["client_id"], "exp": int(time.time()) + 3600}
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return Response.json({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                              "access_token": f"eyJhbGciOiJub25lIn0.{payload}.emulated"})

    router.add("GET", "/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    router.add("GET", "/common/discovery/instance", instance_discovery)
    router.add("POST", "/{tenant}/oauth2/v2.0/token", token)


# ----------------------------------------------------------------------------- blob


def register_blob(router: Router, store: "Store") -> None:
    """Block blobs, their metadata and container listings, in ``store.blobs``."""

    def blob_headers(blob: dict) -> dict[str, str]:
        headers = {"ETag": blob["etag"], "Last-Modified": formatdate(blob["modified"], usegmt=True),
                   "x-ms-blob-type": "BlockBlob", "x-ms-request-id": new_id(""), "x-ms-version": "2025-01-05",
                   "Content-MD5": base64.b64encode(hashlib.md5(blob["data"]).digest()).decode(),
                   "x-ms-creation-time": formatdate(blob["created"], usegmt=True)}
        for key, value in blob["metadata"].items():
            headers[f"x-ms-meta-{key}"] = value
        return headers

    def put(account: str, container: str, path: str, data: bytes, request: Request) -> Response:
        key = (account, container, path)
        now = time.time()
        old = store.blobs.get(key)
        if old is not None and request.headers.get("if-none-match") == "*":
            return _raw(409, "BlobAlreadyExists")
        store.blobs[key] = {"data": data, "etag": f'"0x{new_id("").upper()[:15]}"', "modified": now,
                            "created": old["created"] if old else now, "metadata": _metadata(request)}
        return Response(201, b"", {k: v for k, v in blob_headers(store.blobs[key]).items() if not k.startswith("x-ms-meta")}
                        | {"x-ms-request-server-encrypted": "true"})

    def on_blob(request: Request) -> Response:
        account = request.params["__label"]
        container, path = request.params["container"], request.params["blob"]
        key = (account, container, path)
        comp = request.arg("comp")
        if request.method == "PUT":
            if comp == "block":
                store.uncommitted_blocks.setdefault(key, {})[request.arg("blockid") or ""] = request.body
                return Response(201, b"", {"x-ms-request-server-encrypted": "true"})
            if comp == "blocklist":
                import re

                ids = re.findall(r"<(?:Latest|Uncommitted|Committed)>([^<]*)</", request.body.decode())
                blocks = store.uncommitted_blocks.pop(key, {})
                return put(account, container, path, b"".join(blocks.get(i, b"") for i in ids), request)
            if comp == "metadata":
                blob = store.blobs.get(key)
                if blob is None:
                    return _raw(404, "BlobNotFound")
                blob["metadata"] = _metadata(request)
                return Response(200, b"", {"ETag": blob["etag"]})
            return put(account, container, path, request.body, request)
        blob = store.blobs.get(key)
        if blob is None:
            return _raw(404, "BlobNotFound")
        if request.method == "DELETE":
            del store.blobs[key]
            return Response(202, b"", {"x-ms-delete-type-permanent": "true"})
        headers = blob_headers(blob) | {"Content-Type": "application/octet-stream"}
        # HEAD: the base server sends Content-Length of the body but not the body itself
        return Response(200, blob["data"], headers)

    def on_container(request: Request) -> Response:
        account, container = request.params["__label"], request.params["container"]
        if request.arg("comp") != "list":
            return Response(200, b"", {"ETag": '"0x1"', "Last-Modified": formatdate(usegmt=True)})
        prefix = request.arg("prefix") or ""
        items = []
        for (acc, cont, path), blob in sorted(store.blobs.items()):
            if acc == account and cont == container and path.startswith(prefix):
                meta = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in blob["metadata"].items())
                items.append(f"<Blob><Name>{escape(path)}</Name><Properties><Content-Length>{len(blob['data'])}"
                             f"</Content-Length><BlobType>BlockBlob</BlobType><Etag>{blob['etag']}</Etag>"
                             f"<Last-Modified>{formatdate(blob['modified'], usegmt=True)}</Last-Modified></Properties>"
                             f"<Metadata>{meta}</Metadata></Blob>")
        xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://{account}.blob.core.windows.net/" '
               f'ContainerName="{container}"><Prefix>{escape(prefix)}</Prefix><Blobs>{"".join(items)}</Blobs><NextMarker /></EnumerationResults>')
        return Response(200, xml.encode(), {"Content-Type": "application/xml"})

    router.add("GET", "/{container}", on_container)
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        router.add(method, r"/{container}/(?P<blob>.+)", on_blob)


def _metadata(request: Request) -> dict[str, str]:
    return {k[len("x-ms-meta-"):]: v for k, v in request.headers.items() if k.startswith("x-ms-meta-")}


def _raw(status: int, code: str) -> Response:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'.encode()
    return Response(status, body, {"x-ms-error-code": code, "Content-Type": "application/xml"})


# ------------------------------------------------------------------------ inference


def register_inference(router: Router, store: "Store") -> None:
    """Chat on a serverless endpoint of ``store``, with the endpoint's key."""
    from cloudtune.emulators.azure._arm_ml import endpoint_state

    def chat(request: Request) -> Response:
        name = request.params["__label"]
        found = [(key, ep) for key, ep in store.endpoints.items() if key[1].lower() == name.lower()]
        if not found:
            return Response.json(error_body(404, f"Endpoint {name} not found", "EndpointNotFound"), 404)
        key, endpoint = found[0]
        if endpoint_state(store, endpoint) != "Succeeded":
            return Response.json(error_body(404, f"Endpoint {name} is not ready", "EndpointNotReady"), 404)
        given = request.headers.get("api-key") or request.headers.get("authorization", "")[len("Bearer "):]
        if given not in (endpoint["keys"]["primaryKey"], endpoint["keys"]["secondaryKey"]):
            return Response.json(error_body(401, "Invalid endpoint key", "Unauthorized"), 401)
        body = request.json()
        model_id = endpoint["body"]["properties"]["modelSettings"]["modelId"]
        parts = model_id.rstrip("/").split("/")
        model = f"{parts[-3]}:{parts[-1]}" if "/versions/" in model_id else parts[-1]
        return Response.json(chat_completion(model, body.get("messages") or []))

    # how-to/fine-tune-serverless.md (01/28/2026): {scoring_uri}/v1/chat/completions with the endpoint key
    router.add("POST", "/v1/chat/completions", chat)


def chat_completion(model: str, messages: list) -> dict:
    """A deterministic answer that names the model, so tests can tell models apart."""
    from cloudtune.emulators.judging import judge_reply

    last = next((m.get("content") for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), "")
    text = judge_reply(str(last)) or f"Ready. ({model} heard: {str(last)[:40]})"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())}}
