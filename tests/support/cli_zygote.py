"""``cloudtune`` commands in processes forked from one interpreter that has already imported
cloudtune, pydantic and the providers' SDKs.

A fault-matrix row starts 4-8 CLIs; a fresh interpreter spends most of a short command
(``status --offline``, ``cleanup``) importing the SDKs again. Here a zygote process imports
them once and forks one child per command. The child is a process of its own, as a CLI a
user starts: its own session, working directory, environment (replaced wholesale), stdin
from /dev/null, stdout and stderr to files; it runs ``cloudtune.cli.main(args)`` and exits
with its code. Only what ``import`` did is shared.

Commands that a test signals or kills (``Ctx.start``) still start a fresh interpreter.

Protocol (one Unix-socket connection per command, JSON lines): the client sends
``{"args", "cwd", "env"}``; the child answers ``{"pid"}`` when it starts and
``{"rc", "out", "err"}`` when the command ends.
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
from pathlib import Path
from typing import Any

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
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own children
        os.setsid()
        stream = conn.makefile("rw", encoding="utf-8")
        request: dict[str, Any] = json.loads(stream.readline())
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import random

        random.seed()  # not the zygote's sequence
        out = tempfile.TemporaryFile(mode="w+")
        err = tempfile.TemporaryFile(mode="w+")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        stream.write(json.dumps({"pid": os.getpid()}) + "\n")
        stream.flush()
        code = _run_cli(request["args"])
        for handle in (out, err):
            handle.seek(0)
        stream.write(json.dumps({"rc": code, "out": out.read(), "err": err.read()}) + "\n")
        stream.flush()
    finally:
        os._exit(code)


def _run_cli(args: list[str]) -> int:
    from cloudtune.cli import main

    sys.argv = ["cloudtune", *args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors, sys.exit in a command
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
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
