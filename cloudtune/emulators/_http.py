"""The small HTTP server every emulator is built on: routing, JSON, bearer checks,
injectable faults and an adjustable clock. Standard library only.

Faults can be set in-process (``server.faults.add(...)``) or over HTTP by another
process (``POST /_emulator/faults`` with the same fields), which is how the CLI
end-to-end tests and users' CI dry runs inject them.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"


class EmulatorClock:
    """Emulated time: real time scaled by ``speed`` plus manual advances, or a function."""

    def __init__(self, speed: float = 1.0, source: Callable[[], float] | None = None) -> None:
        self._source = source or time.time
        self._start_real = self._source()
        self._offset = 0.0
        self.speed = speed
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            elapsed = self._source() - self._start_real
            return self._start_real + elapsed * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        data = json.dumps(payload).encode()
        return cls(status, data, {"Content-Type": "application/json", **(headers or {})})


class HTTPError(Exception):
    """Raised by a handler to answer with an error document."""

    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}


@dataclass
class Fault:
    """One injected fault. ``route`` is a regex matched against "METHOD /path"."""

    route: str = ".*"
    kind: str = "status"  # status | drop | latency | fail_job
    status: int = 500
    retry_after: float | None = None
    times: int = 1  # how many matching requests it hits; -1 = forever
    skip: int = 0  # let this many matching requests through first
    latency_s: float = 0.0
    stage: str | None = None  # for fail_job: the job stage at which to fail
    code: str | None = None
    message: str | None = None
    # process the request first, then: status -> answer with the error; drop -> reset the
    # connection; latency -> wait before answering (the outcome is real, the answer is lost/late)
    after: bool = False

    def matches(self, line: str) -> bool:
        return re.search(self.route, line) is not None


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.hits: list[str] = []

    def add(self, fault: Fault | None = None, **fields: Any) -> Fault:
        fault = fault or Fault(**fields)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, line: str, kinds: tuple[str, ...] = ("status", "drop", "latency")) -> Fault | None:
        """The first armed fault matching this request, consuming one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or fault.times == 0 or not fault.matches(line):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times > 0:
                    fault.times -= 1
                self.hits.append(f"{fault.kind}:{line}")
                return fault
        return None

    def pending(self, kind: str) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.kind == kind and f.times != 0]

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method.upper(), re.compile(regex, re.IGNORECASE), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return decorate

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        path_matched = False
        for route_method, regex, handler in self._routes:
            found = regex.match(path)
            if found:
                path_matched = True
                if route_method == method.upper():
                    return handler, found.groupdict(), True
        return None, {}, path_matched


class EmulatorApp:
    """Subclass: fill ``self.router``, override ``authenticate`` and ``error_body``."""

    def __init__(self, *, clock: EmulatorClock | None = None) -> None:
        self.router = Router()
        self.faults = FaultInjector()
        self.clock = clock or EmulatorClock()
        self.lock = threading.RLock()
        self.request_log: list[str] = []

    # hooks ------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        return None

    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}}

    def control_state(self) -> dict[str, Any]:
        return {}

    # dispatch ---------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/"):
            return self._control(request)
        handler, params, path_known = self.router.match(request.method, request.path)
        if handler is None:
            status = 405 if path_known else 404
            return Response.json(self.error_body(status, f"No route {request.method} {request.path}"), status)
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        request.params = params
        try:
            return handler(request)
        except HTTPError as err:
            return Response.json(err.payload, err.status, err.headers)

    def _control(self, request: Request) -> Response:
        if request.path == "/_emulator/faults":
            if request.method == "POST":
                body = request.json()
                for item in body if isinstance(body, list) else [body]:
                    self.faults.add(Fault(**item))
                return Response.json({"faults": self.faults.describe()})
            if request.method == "DELETE":
                self.faults.clear()
                return Response.json({"faults": []})
            return Response.json({"faults": self.faults.describe(), "hits": self.faults.hits})
        if request.path == "/_emulator/advance" and request.method == "POST":
            self.clock.advance(float(request.json().get("seconds", 0)))
            return Response.json({"now": self.clock.now()})
        if request.path == "/_emulator/state":
            with self.lock:
                return Response.json({"now": self.clock.now(), "requests": len(self.request_log), **self.control_state()})
        return Response.json({"error": "unknown control path"}, 404)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~45 ms a request instead of ~1 ms).
    disable_nagle_algorithm = True
    server: "EmulatorHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        line = f"{self.command} {parts.path}"
        fault = app.faults.take(line) if not parts.path.startswith("/_emulator/") else None
        if fault is not None and fault.kind == "latency" and not fault.after:
            time.sleep(fault.latency_s)
            fault = None
        length = int(self.headers.get("Content-Length") or 0)
        if fault is not None and fault.kind == "drop" and not fault.after:
            # read part of the body, then reset the connection
            if length:
                self.rfile.read(min(length, 1024))
            self._reset()
            return
        body = self._read_body(length)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with app.lock:
            app.request_log.append(line)
        if fault is not None and fault.kind == "status" and not fault.after:
            response = self._fault_response(app, fault)
        else:
            try:
                response = app.handle(request)
            except Exception as exc:  # noqa: BLE001 - an emulator bug must still answer
                response = Response.json(app.error_body(500, f"emulator error: {exc!r}", "server_error"), 500)
            if fault is not None and fault.kind == "status":
                response = self._fault_response(app, fault)
        if fault is not None and fault.kind == "latency":
            time.sleep(fault.latency_s)
        if fault is not None and fault.kind == "drop":
            self._reset()
            return
        try:
            self._send(response)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (its read timeout)
            self.close_connection = True

    def _read_body(self, length: int) -> bytes:
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    @staticmethod
    def _fault_response(app: EmulatorApp, fault: Fault) -> Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
            headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
        message = fault.message or f"injected fault {fault.status}"
        code = fault.code or ("rate_limit_exceeded" if fault.status == 429 else "server_error")
        return Response.json(app.error_body(fault.status, message, code), fault.status, headers)

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch



class EmulatorHTTPServer(ThreadingHTTPServer):
    """The socket server behind :class:`EmulatorServer`; subclasses swap ``handler_class``."""

    daemon_threads = True
    allow_reuse_address = True
    handler_class: type[RequestHandler] = RequestHandler

    def __init__(self, address: tuple[str, int], app: EmulatorApp, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        super().__init__(address, self.handler_class)


class EmulatorServer:
    """Runs an :class:`EmulatorApp` on loopback in a background thread.

    Variants (e.g. the Azure emulator's TLS proxy) subclass it and override
    :meth:`_make_server` and ``thread_name``; the lifecycle stays here."""

    thread_name = "cloudtune-emulator"

    def __init__(self, app: EmulatorApp, *, host: str = LOOPBACK, port: int = 0, verbose: bool = False) -> None:
        self.app = app
        self._server = self._make_server((host, port), app, verbose)
        self._thread: threading.Thread | None = None

    def _make_server(self, address: tuple[str, int], app: EmulatorApp, verbose: bool) -> EmulatorHTTPServer:
        return EmulatorHTTPServer(address, app, verbose)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> "EmulatorServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
