"""The local OpenAI-compatible chat server: ``python -m local_backend.server SERVER_GROUP_DIR``.

One process per server group (a base model): it holds the base once and each deployment's
LoRA adapter beside it, watches the group's deployment records to load and unload adapters,
and exits when the last deployment is gone. With the ``vllm`` backend it supervises vLLM's
OpenAI server instead (``local_backend/vllm_server.py``).

Serves ``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/chat/completions`` (plain and
``stream: true`` server-sent events) on loopback at a random port (or the one pinned with
``-o serve_port=N``). Each deployment has its own bearer key (its 0600 ``key`` file, never
logged; the same key again when a deployment of that name is made again), so two apps on one
base are revoked separately: a chat request needs the key of the deployment it names. A key is
checked before a request body is read, bodies are bounded and must arrive within a read
timeout, and ``GET /health`` answers without a key. ``server.json`` (pid, port, state, loaded
deployments, memory) is written atomically, so ``ready`` always means "answering". A deployment
being removed stops being routed before its adapter is unloaded; when the server stops, requests
in flight get a grace period and then an error event (see ``local_backend/server_group.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_backend import procs
from local_backend.deployments import ServerGroup
from local_backend.openai_api import (
    ChunkWriter,
    RequestError,
    completion_body,
    parse_chat_request,
)
from local_backend.server_group import (
    InFlight,
    drain_grace_s,
    listen_address,
    on_stop_signals,
    read_timeout_s,
    rss_bytes,
    watch_membership,
    write_state,
)

MAX_BODY_BYTES = 4 * 1024 * 1024


def authorised(header: str | None, key: str) -> bool:
    if not header or not header.startswith("Bearer ") or not key:
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), key.encode())


def _not_found(model: str) -> RequestError:
    return RequestError(404, f"The model '{model}' does not exist", code="model_not_found", param="model",
                        kind="invalid_request_error")


def adapter_id(deployment_name: str) -> str:
    # PEFT puts adapter names inside parameter names, so a deployment name with dots cannot be one.
    return "d_" + hashlib.sha256(deployment_name.encode()).hexdigest()[:16]


class ChatApp:
    """Deployment names -> adapters of one loaded model; answers the OpenAI routes."""

    def __init__(self, chat_model) -> None:
        self.chat_model = chat_model
        # name -> {"adapter": id | None, "model": ..., "created": ..., "key": its bearer key}
        self.served: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.in_flight = InFlight()

    def key_holder(self, header: str | None) -> bool:
        """Whether the Authorization header carries the key of a deployment this server serves."""
        return any(authorised(header, info.get("key", "")) for info in list(self.served.values()))

    def may_use(self, header: str | None, name: str) -> bool:
        info = self.served.get(name)
        return info is not None and authorised(header, info.get("key", ""))

    @staticmethod
    def _model(name: str, info: dict[str, Any]) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(info["created"]), "owned_by": "cloudtune-local",
                "root": info["model"]}

    def models(self) -> tuple[int, dict]:
        data = [self._model(name, info) for name, info in sorted(self.served.items())]
        return 200, {"object": "list", "data": data, "memory": self.chat_model.memory()}

    def model(self, name: str, header: str | None) -> tuple[int, dict]:
        info = self.served.get(name)
        if info is None or not self.may_use(header, name):
            error = _not_found(name)
            return error.status, error.body
        return 200, self._model(name, info)

    def prepare(self, body: dict[str, Any], header: str | None = None):
        request = parse_chat_request(body)
        info = self.served.get(request.model)
        # a key of another deployment on this server does not open this one: answered as OpenAI
        # answers a model the key's project cannot see
        if info is None or not self.may_use(header, request.model):
            raise _not_found(request.model)
        from local_backend.inference import ContextOverflow

        try:
            generation = self.chat_model.generate(
                request.messages,
                adapter=info["adapter"],
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                stop=request.stop,
            )
        except ContextOverflow as exc:
            raise RequestError(400, str(exc), code="context_length_exceeded", param="messages") from None
        return request, generation

    # membership ------------------------------------------------------------
    def sync(self, group: ServerGroup) -> bool:
        """Load the adapters of new deployments, unload those of removed ones; True when any changed.
        A removed deployment stops being routed before its adapter is unloaded (which waits for
        the generation in progress)."""
        members = {member.name: member for member in group.members()}
        wanted = {name: member.record() for name, member in members.items()}
        # Build new dicts and swap them in: request threads read these while this runs.
        served, failed = dict(self.served), dict(self.failed)
        changed = False
        removed = [served.pop(name)["adapter"] for name in [n for n in served if n not in wanted]]
        if removed:
            self.served = dict(served)  # routed no more; server.json says so once the adapters are unloaded
            for adapter in removed:
                if adapter:
                    self.chat_model.remove_adapter(adapter)
            changed = True
        for name, record in wanted.items():
            if name in served or name in failed:
                continue
            try:
                key = members[name].key()
                adapter = None
                if record.get("adapter_dir"):
                    adapter = adapter_id(name)
                    self.chat_model.add_adapter(adapter, Path(record["adapter_dir"]))
                served[name] = {"adapter": adapter, "model": record.get("model", ""),
                                "created": record.get("created") or time.time(), "key": key}
            except Exception as exc:  # noqa: BLE001 - one bad adapter must not take the others down
                failed[name] = f"{type(exc).__name__}: {exc}"
            changed = True
        for name in [n for n in failed if n not in wanted]:
            del failed[name]
        self.served, self.failed = served, failed
        return changed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = read_timeout_s()  # every read and write of the connection (socketserver sets it)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only; headers (and so the key) are never logged.
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    def _send(self, status: int, payload: dict, *, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if close:
            # The request body was not read: the connection cannot carry another request.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, error: RequestError, *, close: bool = False) -> None:
        self._send(error.status, error.body, close=close)

    def _read_body(self) -> dict[str, Any]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestError(411, "Send the body with a Content-Length", code="length_required")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "Invalid Content-Length", code="invalid_request") from None
        if length < 0:  # read(-1) would wait for the client to close the connection
            raise RequestError(400, f"Invalid Content-Length {length}", code="invalid_request")
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"Request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes", code="request_too_large")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"The request body did not arrive within {self.timeout:g} s", code="request_timeout") from None
        if len(raw) < length:
            raise RequestError(400, f"The body ended after {len(raw)} of {length} bytes", code="invalid_request")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise RequestError(400, f"Invalid JSON body: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError(400, "The body must be a JSON object", code="invalid_json")
        return body

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health" and method == "GET":
            return self._send(200, {"status": "ok"}, close=bool(self.headers.get("Content-Length")))
        routes = {("GET", "/v1/models"), ("POST", "/v1/chat/completions")}
        model_id = path[len("/v1/models/"):] if path.startswith("/v1/models/") else None
        if (method, path) not in routes and not (model_id and method == "GET"):
            known = any(p == path for _, p in routes) or bool(model_id)
            return self._refuse(RequestError(405 if known else 404, f"No route {method} {path}", code="not_found"), close=True)
        header = self.headers.get("Authorization")
        if not app.key_holder(header):
            error = RequestError(401, "Invalid or missing API key", code="invalid_api_key", kind="authentication_error")
            return self._refuse(error, close=True)
        if path == "/v1/models":
            return self._send(*app.models(), close=bool(self.headers.get("Content-Length")))
        if model_id:
            from urllib.parse import unquote

            return self._send(*app.model(unquote(model_id), header), close=bool(self.headers.get("Content-Length")))
        try:
            body = self._read_body()
        except RequestError as error:
            return self._refuse(error, close=True)
        with app.in_flight:
            self._complete(app, body, header)

    def _complete(self, app: ChatApp, body: dict[str, Any], header: str | None) -> None:
        try:
            request, generation = app.prepare(body, header)
        except RequestError as error:
            return self._refuse(error)
        try:
            if request.stream:
                return self._stream(request, generation)
            for _ in generation:
                if app.in_flight.aborting.is_set():
                    generation.close()
                    return self._refuse(RequestError(503, "The server is stopping (its last deployment was removed)",
                                                     code="server_stopping", kind="server_error"), close=True)
            result = generation.result
            return self._send(200, completion_body(request.model, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens))
        except (BrokenPipeError, ConnectionResetError):
            generation.close()
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than drop the connection
            generation.close()
            return self._refuse(RequestError(500, f"generation failed: {type(exc).__name__}: {exc}", code="server_error", kind="server_error"))

    def _stream(self, request, generation) -> None:
        chunks = ChunkWriter(request.model, request.include_usage)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True

        def event(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        event(chunks.role())
        aborting = self.server.app.in_flight.aborting
        try:
            for piece in generation:
                if aborting.is_set():
                    generation.close()
                    # never a silent end an app would read as a complete answer
                    event({"error": {"message": "The server is stopping (its last deployment was removed); this "
                                                "answer is incomplete.", "type": "server_error", "param": None,
                                     "code": "server_stopping"}})
                    return
                event(chunks.content(piece))
        except Exception as exc:  # noqa: BLE001 - headers are gone: report in the stream, as OpenAI does
            generation.close()
            event({"error": {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error", "param": None, "code": "server_error"}})
            return
        result = generation.result
        event(chunks.finish(result.finish_reason))
        if request.include_usage:
            event(chunks.usage(result.prompt_tokens, result.completion_tokens))
        event("[DONE]")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # waiting requests queue (on the model's lock), they are not refused

    def __init__(self, app: ChatApp, host: str, port: int = 0) -> None:
        self.app = app
        super().__init__((host, port), _Handler)


def serve_builtin(group: ServerGroup) -> int:
    config = group.config()
    host, wanted_port = listen_address(group)
    write_state(group, state="loading")
    try:
        from local_backend.inference import ChatModel

        app = ChatApp(ChatModel(config["base_model"]))
        app.sync(group)
        try:
            server = _Server(app, host, wanted_port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{wanted_port} (serve_port): {exc.strerror}") from None
    except BaseException as exc:
        write_state(group, state="failed", pid=None, error=f"{type(exc).__name__}: {exc}")
        raise
    stopping = threading.Event()
    on_stop_signals(stopping)
    port = server.server_address[1]
    http = threading.Thread(target=server.serve_forever, daemon=True)
    http.start()

    def publish() -> None:
        # the keys stay in this process: server.json tells which deployments are served, not how to call them
        served = {name: {k: v for k, v in info.items() if k != "key"} for name, info in app.served.items()}
        write_state(group, state="ready", port=port, host=host, ready_at=time.time(), deployments=served,
                    failed=app.failed, memory={**app.chat_model.memory(), "rss_bytes": rss_bytes()})

    publish()
    print(f"serving {sorted(app.served)} on http://{host}:{port}/v1", file=sys.stderr)
    watch_membership(group, stopping, lambda: app.sync(group), publish)
    server.shutdown()  # no new requests (the listening socket closes next); the ones in flight go on
    server.server_close()
    write_state(group, state="stopping", pid=None)
    cut = app.in_flight.drain(drain_grace_s())
    if cut:
        print(f"{cut} request(s) still running after the grace period were ended with an error", file=sys.stderr)
    write_state(group, state="stopped", pid=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m local_backend.server SERVER_GROUP_DIR", file=sys.stderr)
        return 2
    procs.skip_unused_imports()
    path = Path(argv[0])
    group = ServerGroup(path.name, path)
    if group.config().get("backend") == "vllm":
        from local_backend.vllm_server import serve_vllm

        return serve_vllm(group)
    return serve_builtin(group)


if __name__ == "__main__":
    sys.exit(main())
