"""A small OpenAI-compatible chat server: ``python -m local_backend.server DEPLOYMENT_DIR``.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming) on
127.0.0.1 at a random port, behind a bearer key read from the deployment's 0600
``key`` file (never logged). ``GET /health`` answers without a key. It writes
``server.json`` (pid, port, state) atomically once the model is loaded, so
``ready`` always means "answering".
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_backend._files import read_json, write_json_atomic

LOOPBACK = "127.0.0.1"


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, "code": code, "param": None}}


class ChatApp:
    def __init__(self, deployment: dict[str, Any], key: str, chat_model) -> None:
        self.deployment = deployment
        self._key = key
        self.chat_model = chat_model
        self.names = {deployment["name"], deployment["model"]}

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self._key.encode())

    def models(self) -> tuple[int, dict]:
        created = int(self.deployment.get("created", time.time()))
        data = [{"id": self.deployment["name"], "object": "model", "created": created, "owned_by": "cloudtune-local"}]
        return 200, {"object": "list", "data": data}

    def chat(self, body: dict[str, Any]) -> tuple[int, dict]:
        model = body.get("model")
        if model not in self.names:
            return _error(404, f"The model {model!r} does not exist on this deployment", "model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list", "invalid_messages")
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                return _error(400, "each message needs a 'role'", "invalid_messages")
            if not isinstance(message.get("content", ""), str):
                return _error(400, "only text content is supported", "invalid_messages")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the local server", "unsupported_parameter")
        if int(body.get("n") or 1) != 1:
            return _error(400, "only n=1 is supported", "unsupported_parameter")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        temperature = body.get("temperature")
        result = self.chat_model.complete(
            messages,
            max_tokens=int(max_tokens),
            temperature=1.0 if temperature is None else float(temperature),
            top_p=float(body.get("top_p") or 1.0),
            seed=body.get("seed"),
            stop=stop,
        )
        return 200, {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Request lines only; headers (and so the key) are never logged.
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path == "/health" and method == "GET":
            return self._send(200, {"status": "ok"})
        routes = {("GET", "/v1/models"), ("POST", "/v1/chat/completions")}
        if (method, path) not in routes:
            known = any(p == path for _, p in routes)
            return self._send(*_error(405 if known else 404, f"No route {method} {path}", "not_found"))
        if not app.authorised(self.headers.get("Authorization")):
            return self._send(*_error(401, "Invalid or missing API key", "invalid_api_key", "authentication_error"))
        if path == "/v1/models":
            return self._send(*app.models())
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return self._send(*_error(400, f"Invalid JSON body: {exc}", "invalid_json"))
        try:
            return self._send(*app.chat(body))
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than drop the connection
            return self._send(*_error(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error", "server_error"))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        super().__init__((LOOPBACK, 0), _Handler)


def serve(deployment_dir: Path) -> int:
    deployment = read_json(deployment_dir / "deployment.json")
    key = (deployment_dir / "key").read_text().strip()
    state_path = deployment_dir / "server.json"
    write_json_atomic(state_path, {"state": "loading", "pid": os.getpid()})
    try:
        from local_backend.inference import ChatModel

        adapter = deployment.get("adapter_dir")
        chat_model = ChatModel(deployment["base_model"], Path(adapter) if adapter else None)
        server = _Server(ChatApp(deployment, key, chat_model))
    except BaseException as exc:  # noqa: BLE001 - recorded for get_deployment
        write_json_atomic(state_path, {"state": "failed", "pid": None, "error": f"{type(exc).__name__}: {exc}"})
        raise
    stopping = threading.Event()

    def on_term(signum, frame) -> None:  # noqa: ANN001 - signal handler signature
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    port = server.server_address[1]
    write_json_atomic(state_path, {"state": "ready", "pid": os.getpid(), "port": port, "ready_at": time.time()})
    print(f"serving {deployment['name']} on http://{LOOPBACK}:{port}/v1", file=sys.stderr)
    server.serve_forever()
    server.server_close()
    write_json_atomic(state_path, {"state": "stopped", "pid": None})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m local_backend.server DEPLOYMENT_DIR", file=sys.stderr)
        return 2
    return serve(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
