"""``cloudtune`` commands in processes forked from one interpreter that has already imported
cloudtune, pydantic and the providers' SDKs.

A fault-matrix row starts 4-8 CLIs; a fresh interpreter spends most of a short command
(``status --offline``, ``cleanup``) importing the SDKs again. Here a zygote process imports
them once and forks one child per command. The child is a process of its own, as a CLI a
user starts: its own session, working directory, environment (replaced wholesale), stdin
from /dev/null, stdout and stderr to files; it runs ``cloudtune.cli.main(args)`` and exits
with its code. Only what ``import`` did is shared.

Commands a test signals, kills or waits on (``start``) come as ``ZygoteProcess``, which behaves
as the ``subprocess.Popen`` a fresh interpreter would give: stdout and stderr are pipes, the
command runs in its own session, ``send_signal``/``kill`` reach it, and ``returncode`` is its
exit code or minus the signal that ended it. Their stdout and stderr are unbuffered when the
environment asks (``PYTHONUNBUFFERED``), as ``-u`` would make them.

Protocol (one Unix-socket connection per command): the client first sends one byte, ``R`` (run
to the end) or ``P`` (a process; the write ends of its stdout and stderr pipes ride along as
SCM_RIGHTS), then JSON lines. It sends ``{"args", "cwd", "env"}``; ``R``: the child answers
``{"pid"}`` when it starts and ``{"rc", "out", "err"}`` when the command ends; ``P``: a monitor
child forks the command, answers ``{"pid"}`` and, once it has waited for it, ``{"rc"}``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Union

ROOT = Path(__file__).resolve().parents[2]
# what the commands import, lazily or not; imported before the first fork. The second group is what
# forked commands still imported on their own (a trace of the suite's ~800 commands, 2026-12-06): the SDKs'
# lazily loaded resources and transports. With it, the token counters and the MIME table below, the
# 378 CLIs of the fault matrix's OpenAI rows took 33 s of CPU instead of 52 s.
PRELOAD = ("cloudtune.cli", "cloudtune.commands", "cloudtune.teardown_commands", "cloudtune.pipeline",
           "cloudtune.ledger", "cloudtune.output", "cloudtune.dataset", "cloudtune.compare.command",
           "providers.openai", "providers.azure", "providers.local", "openai", "azure.identity",
           "azure.mgmt.core", "azure.ai.ml", "rich.console", "tiktoken",
           # -- imported lazily by the commands
           "cloudtune.multirun", "cloudtune.run_selector", "cloudtune.state.azblob", "cloudtune.state.postgres",
           "providers.azure._openai_route", "providers.azure._preflight", "providers.azure._sdk_retries",
           "providers.azure._serverless_route", "tests.support.memory_provider",
           "openai.resources.fine_tuning", "openai.resources.files", "openai.resources.models",
           "openai.resources.chat", "openai.pagination", "openai.lib.streaming.chat", "openai.lib._files",
           "httpcore2", "h11", "anyio.streams.tls", "truststore", "jiter", "tenacity", "msal_extensions",
           "azure.identity._credentials.imds", "azure.identity._internal.managed_identity_client",
           "azure.identity._internal.msal_managed_identity_client", "azure.core.rest._requests_basic",
           "azure.ai.ml.entities._job.finetuning.azure_openai_finetuning_job", "psycopg", "_strptime", "netrc",
           "encodings.utf_8_sig", "ctypes.util")
# token counters the validator loads on first use (~0.2 s each time in a fresh command)
WARM_TOKENIZERS = ("o200k_base", "cl100k_base")


class ZygoteGone(RuntimeError):
    """The zygote is not there any more (a caller may fall back to a fresh interpreter)."""


class CliZygote:
    """The client side: starts the zygote and runs commands through it."""

    def __init__(self, env: dict[str, str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="ct-zygote-")
        self.address = os.path.join(self._dir, "socket")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.cli_zygote", self.address], cwd=ROOT,
                                        env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()  # after the imports
        if ready.strip() != "ready":
            self.close()
            raise ZygoteGone(f"the CLI zygote did not start (said {ready!r})")
        self._lock = threading.Lock()

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of ``cloudtune *args``; ``subprocess.TimeoutExpired``
        after ``timeout`` seconds (the command's process group is killed)."""
        if self.process.poll() is not None:
            raise ZygoteGone("the CLI zygote has exited")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(self.address)
            conn.sendall(b"R")
            stream = conn.makefile("rw", encoding="utf-8")
            stream.write(json.dumps({"args": args, "cwd": str(cwd), "env": env}) + "\n")
            stream.flush()
            pid = None
            try:
                pid = json.loads(stream.readline())["pid"]
                answer = stream.readline()
            except (TimeoutError, socket.timeout) as exc:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(["cloudtune", *args], timeout) from exc
            if not answer:
                raise RuntimeError(f"`cloudtune {' '.join(args[:2])}` (pid {pid}) died without an answer")
            done = json.loads(answer)
            return done["rc"], done["out"], done["err"]

    def start(self, args: list[str], cwd: Path, env: dict[str, str]) -> "ZygoteProcess":
        """``cloudtune *args`` started, as ``subprocess.Popen`` would start it (see ``ZygoteProcess``)."""
        if self.process.poll() is not None:
            raise ZygoteGone("the CLI zygote has exited")
        return ZygoteProcess(self.address, args, cwd, env)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self.address)
            os.rmdir(self._dir)


class ZygoteProcess:
    """The part of ``subprocess.Popen`` (text mode, stdout and stderr piped, a session of its own)
    that tests use, for a command forked from the zygote: ``pid``, ``args``, ``returncode``,
    ``stdout``, ``stderr``, ``poll``, ``wait``, ``communicate``, ``send_signal``, ``terminate``,
    ``kill``. The exit status comes from the monitor that forked the command and waited for it."""

    def __init__(self, address: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.args = [sys.executable, "-m", "cloudtune", *args]
        self.returncode: int | None = None
        self.stdin = None
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(address)
            socket.send_fds(self._conn, [b"P"], [out_write, err_write])
        except OSError:
            for fd in (out_read, err_read):
                os.close(fd)
            self._conn.close()
            raise
        finally:
            os.close(out_write)  # the command holds them now: EOF comes when it (and what it left) ends
            os.close(err_write)
        self.stdout = open(out_read, encoding="utf-8", errors="replace")
        self.stderr = open(err_read, encoding="utf-8", errors="replace")
        self._stream = self._conn.makefile("rw", encoding="utf-8")
        self._stream.write(json.dumps({"args": args, "cwd": str(cwd), "env": env}) + "\n")
        self._stream.flush()
        started = self._stream.readline()
        if not started:
            raise ZygoteGone(f"`cloudtune {' '.join(args[:2])}` did not start")
        self.pid: int = json.loads(started)["pid"]
        self._ended = threading.Event()
        self._readers: list[threading.Thread] = []
        self._output: dict[str, list[str]] = {"out": [], "err": []}
        threading.Thread(target=self._await_exit, name=f"zygote-wait-{self.pid}", daemon=True).start()

    def _await_exit(self) -> None:
        try:
            line = self._stream.readline()
        except OSError:
            line = ""
        # no answer: the monitor itself was killed; the command's status is lost with it
        self.returncode = json.loads(line)["rc"] if line else -signal.SIGKILL
        self._ended.set()
        with contextlib.suppress(OSError):
            self._conn.close()

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:  # noqa: A002
        """Everything left on stdout and stderr once the command has ended; TimeoutExpired (and a
        later call goes on collecting) as Popen.communicate."""
        if input is not None:
            raise ValueError("a zygote command's stdin is /dev/null")
        if not self._readers:
            for key, handle in (("out", self.stdout), ("err", self.stderr)):
                reader = threading.Thread(target=self._collect, args=(key, handle), daemon=True)
                reader.start()
                self._readers.append(reader)
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return "".join(self._output["out"]), "".join(self._output["err"])

    def _collect(self, key: str, handle: Any) -> None:
        while chunk := handle.read(65536):
            self._output[key].append(chunk)
        handle.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> "ZygoteProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait()


_SHARED: CliZygote | None = None
_SHARED_LOCK = threading.Lock()


def shared_zygote() -> CliZygote:
    """This process's zygote, started on first use and stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.process.poll() is not None:
            from tests.support.testenv import env_without

            _SHARED = CliZygote(env_without("CLOUDTUNE_", "OPENAI_", "AZURE_"))
            import atexit

            atexit.register(_SHARED.close)
        return _SHARED


def run_cloudtune(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``cloudtune *args`` to its end, forked from the shared zygote (with
    ``CLOUDTUNE_TESTS_FRESH_CLI=1`` in the test's environment: a fresh interpreter, the slow way)."""
    if os.environ.get("CLOUDTUNE_TESTS_FRESH_CLI"):
        return subprocess.run([sys.executable, "-m", "cloudtune", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    rc, out, err = shared_zygote().run(list(args), cwd, env, timeout)
    return subprocess.CompletedProcess(["cloudtune", *args], rc, out, err)


Process = Union[ZygoteProcess, "subprocess.Popen[str]"]  # what ``start_cloudtune`` gives


def start_cloudtune(args: list[str], cwd: Path, env: dict[str, str]) -> Process:
    """``cloudtune *args`` started in a session of its own with stdout and stderr piped, forked from
    the shared zygote (``CLOUDTUNE_TESTS_FRESH_CLI=1``: ``subprocess.Popen`` of a fresh interpreter)."""
    if os.environ.get("CLOUDTUNE_TESTS_FRESH_CLI"):
        return subprocess.Popen([sys.executable, "-m", "cloudtune", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return shared_zygote().start(list(args), cwd, env)


# ----------------------------------------------------------------- the zygote


def _serve(address: str) -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    import mimetypes

    mimetypes.init()  # the SDKs guess an upload's type: the system's table is read once, here
    from cloudtune.dataset._bpe_openai import get_tokenizer

    for encoding in WARM_TOKENIZERS:
        get_tokenizer(encoding)  # None (the validator then says why) when bpe-openai cannot load it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    parent = os.getppid()
    listener.settimeout(1.0)
    import gc

    # what the imports left is shared by every command: out of the collector's sight, a command's
    # collections look only at its own objects (and do not touch, so copy, the shared pages)
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process is gone (killed): so is the zygote
                return
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            listener.close()
            _child(conn)  # never returns
        conn.close()


def _child(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command (or the monitor) waits for its children
        mode, fds, _, _ = socket.recv_fds(conn, 1, 2)
        stream = conn.makefile("rw", encoding="utf-8")
        request: dict[str, Any] = json.loads(stream.readline())
        if mode == b"P":
            code = _monitor(conn, stream, request, fds)
            return
        os.setsid()
        out = tempfile.TemporaryFile(mode="w+")
        err = tempfile.TemporaryFile(mode="w+")
        _become_the_command(request, out.fileno(), err.fileno())
        stream.write(json.dumps({"pid": os.getpid()}) + "\n")
        stream.flush()
        code = _run_cli(request["args"])
        for handle in (out, err):
            handle.seek(0)
        stream.write(json.dumps({"rc": code, "out": out.read(), "err": err.read()}) + "\n")
        stream.flush()
    finally:
        os._exit(code & 0xFF)


def _become_the_command(request: dict[str, Any], out_fd: int, err_fd: int) -> None:
    """Working directory, environment, standard streams and random state of the command."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import random

    random.seed()  # not the zygote's sequence
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    if os.environ.get("PYTHONUNBUFFERED"):  # as -u: what was written is in the pipe even if the command is killed
        import io

        sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)


def _monitor(conn: socket.socket, stream: Any, request: dict[str, Any], fds: list[int]) -> int:
    """Fork the command (a session of its own, stdout and stderr on the client's pipes), tell the
    client its pid, wait for it and tell its exit status (minus the signal that ended it)."""
    if len(fds) != 2:
        raise RuntimeError(f"a process request carries stdout and stderr, not {len(fds)} descriptors")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            stream.close()  # the connection is the monitor's
            conn.close()
            os.setsid()
            _become_the_command(request, fds[0], fds[1])
            for fd in fds:
                os.close(fd)
            code = _run_cli(request["args"])
            if code == -signal.SIGINT:  # an interrupt nobody caught: the interpreter dies of the signal
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            os._exit(code & 0xFF)
    for fd in fds:
        os.close(fd)
    stream.write(json.dumps({"pid": pid}) + "\n")
    stream.flush()
    _, status = os.waitpid(pid, 0)
    stream.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
    stream.flush()
    return 0


def _run_cli(args: list[str]) -> int:
    from cloudtune.cli import main

    sys.argv = ["cloudtune", *args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors, sys.exit in a command
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # as the interpreter: a traceback, and the process dies of SIGINT (-2)
        import traceback

        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    import atexit

    atexit._run_exitfuncs()  # what interpreter exit runs (the child leaves with os._exit)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    _serve(sys.argv[1])
