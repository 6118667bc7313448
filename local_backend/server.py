"""The local OpenAI-compatible chat server: ``python -m local_backend.server SERVER_GROUP_DIR``.

One process per server group (a base model): it holds the base once and each deployment's
LoRA adapter beside it, watches the group's deployment records to load and unload adapters,
and exits when the last deployment is gone. With the ``vllm`` backend it supervises vLLM's
OpenAI server instead (``local_backend/vllm_server.py``).

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and ``stream: true``
server-sent events) on loopback at a random port, behind the group's bearer key from its
0600 ``key`` file (never logged). The key is checked before a request body is read, bodies
are bounded, and ``GET /health`` answers without a key. ``server.json`` (pid, port, state,
loaded deployments, memory) is written atomically, so ``ready`` always means "answering".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_backend._files import write_json_atomic
from local_backend.deployments import ServerGroup
from local_backend.openai_api import (
    ChunkWriter,
    RequestError,
    completion_body,
    parse_chat_request,
)

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 4 * 1024 * 1024
_SYNC_INTERVAL_S = 0.25


def authorised(header: str | None, key: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), key.encode())


def adapter_id(deployment_name: str) -> str:
    # PEFT puts adapter names inside parameter names, so a deployment name with dots cannot be one.
    return "d_" + hashlib.sha256(deployment_name.encode()).hexdigest()[:16]


class ChatApp:
    """Deployment names -> adapters of one loaded model; answers the OpenAI routes."""

    def __init__(self, chat_model, key: str) -> None:
        self.chat_model = chat_model
        self.key = key
        self.served: dict[str, dict[str, Any]] = {}  # name -> {"adapter": id | None, "model": ..., "created": ...}
        self.failed: dict[str, str] = {}

    def models(self) -> tuple[int, dict]:
        data = [
            {"id": name, "object": "model", "created": int(info["created"]), "owned_by": "cloudtune-local", "root": info["model"]}
            for name, info in sorted(self.served.items())
        ]
        return 200, {"object": "list", "data": data, "memory": self.chat_model.memory()}

    def prepare(self, body: dict[str, Any]):
        request = parse_chat_request(body)
        info = self.served.get(request.model)
        if info is None:
            raise RequestError(404, f"The model '{request.model}' does not exist", code="model_not_found", param="model", kind="invalid_request_error")
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
        """Load the adapters of new deployments, unload those of removed ones; True when any changed."""
        wanted = {member.name: member.record() for member in group.members()}
        # Build new dicts and swap them in: request threads read these while this runs.
        served, failed = dict(self.served), dict(self.failed)
        changed = False
        for name in [n for n in served if n not in wanted]:
            adapter = served.pop(name)["adapter"]
            if adapter:
                self.chat_model.remove_adapter(adapter)
            changed = True
        for name, record in wanted.items():
            if name in served or name in failed:
                continue
            try:
                adapter = None
                if record.get("adapter_dir"):
                    adapter = adapter_id(name)
                    self.chat_model.add_adapter(adapter, Path(record["adapter_dir"]))
                served[name] = {"adapter": adapter, "model": record.get("model", ""), "created": record.get("created") or time.time()}
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
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"Request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes", code="request_too_large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
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
        if (method, path) not in routes:
            known = any(p == path for _, p in routes)
            return self._refuse(RequestError(405 if known else 404, f"No route {method} {path}", code="not_found"), close=True)
        if not authorised(self.headers.get("Authorization"), app.key):
            error = RequestError(401, "Invalid or missing API key", code="invalid_api_key", kind="authentication_error")
            return self._refuse(error, close=True)
        if path == "/v1/models":
            return self._send(*app.models(), close=bool(self.headers.get("Content-Length")))
        try:
            body = self._read_body()
        except RequestError as error:
            return self._refuse(error, close=True)
        try:
            request, generation = app.prepare(body)
        except RequestError as error:
            return self._refuse(error)
        try:
            if request.stream:
                return self._stream(request, generation)
            for _ in generation:
                pass
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
        try:
            for piece in generation:
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

    def __init__(self, app: ChatApp, host: str) -> None:
        self.app = app
        super().__init__((host, 0), _Handler)


def _write_state(group: ServerGroup, **state: Any) -> None:
    write_json_atomic(group.path / "server.json", {"pid": os.getpid(), **state})


def serve_builtin(group: ServerGroup) -> int:
    config = group.config()
    host = config.get("host") or LOOPBACK
    _write_state(group, state="loading")
    try:
        from local_backend.inference import ChatModel

        app = ChatApp(ChatModel(config["base_model"]), group.key())
        app.sync(group)
        server = _Server(app, host)
    except BaseException as exc:
        _write_state(group, state="failed", pid=None, error=f"{type(exc).__name__}: {exc}")
        raise
    stopping = threading.Event()
    _on_stop_signals(stopping)
    port = server.server_address[1]
    http = threading.Thread(target=server.serve_forever, daemon=True)
    http.start()

    def publish() -> None:
        _write_state(group, state="ready", port=port, host=host, ready_at=time.time(), deployments=app.served,
                     failed=app.failed, memory={**app.chat_model.memory(), "rss_bytes": rss_bytes()})

    publish()
    print(f"serving {sorted(app.served)} on http://{host}:{port}/v1", file=sys.stderr)
    watch_membership(group, stopping, lambda: app.sync(group), publish)
    server.shutdown()
    server.server_close()
    _write_state(group, state="stopped", pid=None)
    return 0


def watch_membership(group: ServerGroup, stopping: threading.Event, sync, publish) -> None:
    """Follow the group's deployment records until stopped or the last one is gone."""
    while not stopping.wait(_SYNC_INTERVAL_S):
        if sync():
            publish()
        if group.members():
            continue
        # Leave only under the group's lock, so a deploy that holds it sees either a live
        # server that will load its deployment or a dead one it must restart.
        lock = open(group.path / "lock", "a")  # noqa: SIM115 - held until the process exits
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if group.members():
            lock.close()  # a deployment arrived meanwhile
            continue
        print("last deployment removed; stopping", file=sys.stderr)
        return


def _on_stop_signals(stopping: threading.Event) -> None:
    def on_term(signum, frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m local_backend.server SERVER_GROUP_DIR", file=sys.stderr)
        return 2
    path = Path(argv[0])
    group = ServerGroup(path.name, path)
    if group.config().get("backend") == "vllm":
        from local_backend.vllm_server import serve_vllm

        return serve_vllm(group)
    return serve_builtin(group)


if __name__ == "__main__":
    sys.exit(main())
