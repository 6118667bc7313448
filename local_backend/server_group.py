"""The life of a server group's process, whichever server it runs (the built-in one in
``local_backend/server.py`` or vLLM supervised by ``local_backend/vllm_server.py``): its
published state, its stop signals, following the group's deployment records, and the bounds
both servers honour (the port a user pinned, read timeouts, the drain grace period).

Both servers import this module; neither imports the other's internals (``server.main`` only
hands a vLLM group to ``vllm_server.serve_vllm``).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_backend._files import write_json_atomic

# ``group`` below is a local_backend.deployments.ServerGroup; deployments.py asks this module for
# the stop timeout, so this module does not import it back (not even for typing)
ServerGroup = Any

LOOPBACK = "127.0.0.1"
SYNC_INTERVAL_S = 0.25
# A client that announced more body than it sends (or a negative Content-Length) holds a thread
# and a connection; after this long without a byte the request is answered 408 and closed.
READ_TIMEOUT_S = 30.0
# When the last deployment goes (or the server is told to stop), requests already being answered
# get this long to finish; what is still streaming then gets an error event, never a silent end.
DRAIN_GRACE_S = 30.0


def _seconds(variable: str, default: float) -> float:
    """A bound, overridable through the environment the server inherits (tests shorten them)."""
    try:
        value = float(os.environ.get(variable, default))
    except ValueError:
        return default
    return max(0.0, value)


def read_timeout_s() -> float:
    return _seconds("CLOUDTUNE_SERVE_READ_TIMEOUT_S", READ_TIMEOUT_S) or READ_TIMEOUT_S


def drain_grace_s() -> float:
    return _seconds("CLOUDTUNE_SERVE_DRAIN_S", DRAIN_GRACE_S)


def stop_timeout_s() -> float:
    """How long whoever stops a server waits before SIGKILL: the drain, and time to say goodbye."""
    return drain_grace_s() + 15.0


def listen_address(group: ServerGroup) -> tuple[str, int]:
    """(host, port): the group's host (loopback unless asked) and the port pinned with
    ``-o serve_port=N`` (0: any free port)."""
    config = group.config()
    return config.get("host") or LOOPBACK, int(config.get("port") or 0)


def write_state(group: ServerGroup, **state: Any) -> None:
    """``server.json``, written atomically: ``ready`` always means "answering"."""
    write_json_atomic(group.path / "server.json", {"pid": os.getpid(), **state})


def on_stop_signals(stopping: threading.Event) -> None:
    def on_term(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def watch_membership(group: ServerGroup, stopping: threading.Event, sync: Callable[[], bool],
                     publish: Callable[[], None]) -> None:
    """Follow the group's deployment records until stopped or the last one is gone."""
    while not stopping.wait(SYNC_INTERVAL_S):
        if sync():
            publish()
        if group.members():
            continue
        # Leave only under the group's lock, so a deploy that holds it sees either a live
        # server that will load its deployment or a dead one it must restart.
        lock = open(group.path / "lock", "a")  # noqa: SIM115 - held until the process exits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if group.members():
            lock.close()  # a deployment arrived meanwhile
            continue
        print("last deployment removed; stopping", file=sys.stderr)
        return


def rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class InFlight:
    """Requests being answered, so a stopping server can wait for them (bounded) and then tell
    the ones still running to end with an error instead of vanishing."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()
        self.aborting = threading.Event()

    def __enter__(self) -> "InFlight":
        with self._changed:
            self._count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def drain(self, grace_s: float, goodbye_s: float = 5.0) -> int:
        """Wait up to ``grace_s`` for every request to finish; then ask the rest to stop (they
        send an error) and give them ``goodbye_s`` to do it. Returns how many were cut."""
        deadline = time.monotonic() + grace_s
        with self._changed:
            while self._count and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
            cut = self._count
            if not cut:
                return 0
            self.aborting.set()
            deadline = time.monotonic() + goodbye_s
            while self._count and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
        return cut
