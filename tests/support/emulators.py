"""``cloudtune emulate openai|azure`` as a separate process, for the tests that drive the CLI
against an emulator over real HTTP.

Started with ``--port 0``, an emulator prints where it listens on its first stdout line:
``OpenAI emulator listening on http://127.0.0.1:PORT/v1`` (openai), or with ``--json`` one JSON
document ``{"proxy": URL, "env": {...}}`` (azure). :class:`EmulatorProcess` reads that line,
and stops the process however the test ends: SIGTERM (the emulators shut their servers down on
it), then SIGKILL if it is still there after :data:`STOP_GRACE_S`.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.testenv import env_without

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 10.0
# importing the SDKs and (azure) making a test CA takes a few seconds; on a loaded 2-core CI
# machine many times that, so this only stops a hung emulator from hanging the suite
START_TIMEOUT_S = 120.0


def control(url: str, path: str, body: Any = None) -> Any:
    """An emulator's control route (``/_emulator/...``): GET, or POST ``body`` as JSON; the
    decoded answer. Never through a proxy: the emulators listen on the loopback."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        return json.loads(response.read())


def _openai_address(first_line: str) -> tuple[str, dict[str, str]] | None:
    if "listening on http://127.0.0.1:" not in first_line:
        return None
    return first_line.split("listening on ", 1)[1].strip().removesuffix("/v1"), {}


def _azure_address(first_line: str) -> tuple[str, dict[str, str]] | None:
    try:
        doc = json.loads(first_line)
    except ValueError:
        return None
    return doc["proxy"], doc["env"]


_ADDRESS_READERS = {"openai": _openai_address, "azure": _azure_address}


class EmulatorProcess:
    """``python -m cloudtune emulate KIND *args`` running in the background.

    ``url``: for openai ``http://127.0.0.1:PORT`` (the SDK's base URL is ``url + "/v1"``; the
    ``/_emulator/...`` control routes hang off ``url``), for azure the HTTPS proxy's URL.
    ``env``: what a client needs to reach it (azure: proxy, CA bundle and credentials; openai: none).

    The emulator's environment is the test process's without the user's ``CLOUDTUNE_*`` settings
    (the pinned day stays), plus ``env``. A context manager; :meth:`stop` may also be called directly.
    """

    def __init__(self, kind: str, *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None) -> None:
        read_address = _ADDRESS_READERS[kind]
        self.command = [sys.executable, "-m", "cloudtune", "emulate", kind, *args]
        environment = env_without("CLOUDTUNE_")
        environment["PYTHONPATH"] = str(ROOT)
        environment.update(env or {})
        # stderr goes to a file, not a pipe nobody reads: a chatty emulator cannot block on a
        # full pipe, and a failed start can quote all of it
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(self.command, cwd=cwd, env=environment, stdout=subprocess.PIPE,
                                        stderr=self._stderr, text=True)
        try:
            first_line = self._first_line()
            address = read_address(first_line)
            if address is None:
                raise AssertionError(self._start_failure(f"its first line was {first_line!r}"))
        except BaseException:
            self.stop()
            raise
        self.url, self.env = address

    def _first_line(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            raise AssertionError(self._start_failure(f"it printed nothing in {START_TIMEOUT_S:.0f} s"))
        return self.process.stdout.readline()

    def _start_failure(self, what: str) -> str:
        self._end_process()
        self._stderr.seek(0)
        return (f"`{' '.join(self.command[2:])}` did not start: {what} (exit code {self.process.returncode})\n"
                f"its stderr:\n{self._stderr.read()[-4000:]}")

    def stop(self) -> None:
        self._end_process()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def _end_process(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
