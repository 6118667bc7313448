"""Local deployments and the server processes behind them.

Deployments that share a base model (and a serving backend) share one server process,
which holds the base once and each deployment's LoRA adapter beside it:

    deployments/<name>/deployment.json   name, model, base model, adapter dir, group, run id, created
    deployments/<name>/key               the deployment's bearer key, mode 0600 (never printed or returned)
    keys/<name>                          the key a deployment of that name gets again (kept across undeploys)
    servers/<group>/group.json           base model, backend
    servers/<group>/key                  the bearer key, mode 0600
    servers/<group>/lock                 flock'ed by whoever changes the group's membership
    servers/<group>/server.json          written by the server only: state, port, loaded deployments, memory
    servers/<group>/server.pid           the pid the CLI started
    servers/<group>/server.log           the server's request log and errors (no headers, no key)

Membership is the set of deployment records naming the group. The CLI changes it under
the group's file lock (CLI commands run as separate processes) and starts the server when
none runs; the server watches the records, loads and unloads adapters to match, and exits,
under the same lock, once the last deployment is gone.

Each deployment on the built-in server has its own key, so two apps on one base are revoked
separately; a deployment made again under the same name gets the same key back, so an app's
configuration survives a redeploy (vLLM takes one key per server: its deployments share the
group's). ``-o serve_port=N`` pins the group's port the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune import timescale
from local_backend import procs
from local_backend._files import (
    deployments_dir,
    local_root,
    read_json,
    write_json_atomic,
)

SERVER_MODULE = "local_backend.server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNLOAD_WAIT_S = 30.0
# A server just spawned may not have exec'd yet (its command line is still its parent's) on a
# loaded machine: its pid counts as the server for this long after it was recorded.
_SPAWN_GRACE_S = 60.0


class StillServing(RuntimeError):
    """An undeployed deployment is still answered by its server after the wait."""


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def servers_dir() -> Path:
    return local_root() / "servers"


def _write_secret(path: Path, value: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


def _log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a server's log (it holds no headers and no key), for the error a
    user sees when the server is gone: why it went is usually there."""
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; {path} ends: " + " | ".join(line.strip() for line in tail) if tail else ""


class ServerGroup:
    """One server process: a base model and a backend (``builtin`` or ``vllm``)."""

    def __init__(self, group_id: str, path: Path | None = None) -> None:
        if not valid_name(group_id):
            raise KeyError(group_id)
        self.group_id = group_id
        self.path = path or servers_dir() / group_id

    @classmethod
    def for_base(cls, base_model: str, backend: str, host: str | None = None) -> ServerGroup:
        identity = base_model if not host else f"{base_model}@{host}"
        return cls(f"{backend}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}")

    @property
    def deployments_root(self) -> Path:
        return self.path.parent.parent / "deployments"

    def config(self) -> dict[str, Any]:
        return read_json(self.path / "group.json", {}) or {}

    def key(self) -> str:
        return (self.path / "key").read_text().strip()

    def state(self) -> dict[str, Any]:
        return read_json(self.path / "server.json", {}) or {}

    def server_pid(self) -> int | None:
        try:
            return int((self.path / "server.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def server_alive(self) -> bool:
        pid = self.server_pid()
        if procs.pid_alive(pid, expect=str(self.path)):
            return True
        try:
            recorded = (self.path / "server.pid").stat().st_mtime
        except FileNotFoundError:
            return False
        # caught between fork and exec: alive, unless the grace is over (then a reused pid is not ours)
        return procs.pid_exists(pid) and time.time() - recorded < _SPAWN_GRACE_S

    @contextlib.contextmanager
    def locked(self, *, blocking: bool = True) -> Iterator[bool]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def members(self) -> list[DeploymentDir]:
        """Deployment records naming this group (read from this group's own tree)."""
        root = self.deployments_root
        if not root.is_dir():
            return []
        found = []
        for path in sorted(root.iterdir()):
            record = read_json(path / "deployment.json", {}) or {}
            if record.get("group") == self.group_id and valid_name(path.name):
                found.append(DeploymentDir(path.name, path))
        return found

    def ensure(self, base_model: str, backend: str, host: str | None = None, port: int | None = None) -> None:
        """Create the group's files (caller holds the lock). A pinned ``port`` must agree with the
        port of a server already running for the group (it serves every deployment of the base)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "key").is_file():
            _write_secret(self.path / "key", secrets.token_urlsafe(32))
        config = self.config()
        if not config:
            write_json_atomic(self.path / "group.json", {"base_model": base_model, "backend": backend, "host": host,
                                                         "port": port, "created": time.time()})
        elif port and config.get("port") != port:
            running = self.state().get("port") if self.server_alive() else None
            if running and running != port:
                raise PortConflict(f"the server of {base_model} already listens on port {running}; serve_port={port} "
                                   "would move every deployment of that base (undeploy them first)")
            write_json_atomic(self.path / "group.json", {**config, "port": port})

    def start(self) -> None:
        (self.path / "server.json").unlink(missing_ok=True)
        pid = procs.spawn_detached(SERVER_MODULE, str(self.path), log_path=self.path / "server.log", cwd=self.path)
        (self.path / "server.pid").write_text(str(pid))

    def ensure_running(self) -> None:
        """Start the server unless one runs (caller holds the lock, so a running one is not on its way out)."""
        if not self.server_alive():
            self.start()

    def stop(self) -> None:
        from local_backend.server_group import stop_timeout_s

        # the server drains the requests in flight first (bounded), so wait past that before SIGKILL
        procs.stop_process(self.server_pid(), expect=str(self.path), timeout_s=stop_timeout_s())


class PortConflict(ValueError):
    """``serve_port`` asked for a port other than the one the group's server listens on."""


def _kept_key(name: str) -> str:
    """The key of deployments named ``name``: made once, then the same at every redeploy."""
    path = local_root() / "keys" / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_secret(path, secrets.token_urlsafe(32))
        return path.read_text().strip()


@dataclass
class DeploymentStatus:
    name: str
    model: str
    state: str  # creating | ready | failed
    endpoint_url: str | None
    pid: int | None
    port: int | None
    error: str | None
    created: float | None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class DeploymentDir:
    def __init__(self, name: str, path: Path | None = None) -> None:
        if not valid_name(name):
            raise KeyError(name)
        self.name = name
        self.path = path or deployments_dir() / name

    @classmethod
    def all(cls) -> list[DeploymentDir]:
        if not deployments_dir().is_dir():
            return []
        return [cls(p.name) for p in sorted(deployments_dir().iterdir()) if (p / "deployment.json").is_file()]

    def exists(self) -> bool:
        return (self.path / "deployment.json").is_file()

    def record(self) -> dict[str, Any]:
        return read_json(self.path / "deployment.json", {}) or {}

    def key(self) -> str:
        return (self.path / "key").read_text().strip()

    def group(self) -> ServerGroup:
        return ServerGroup(self.record()["group"])

    def server_pid(self) -> int | None:
        return self.group().server_pid() if self.exists() else None

    def create(self, *, model: str, base_model: str, adapter_dir: str | None, backend: str = "builtin",
               run_id: str | None = None, host: str | None = None, port: int | None = None) -> None:
        """Record the deployment in its server group and start the group's server if none runs.
        ``host`` other than loopback must be asked for (``-o serve_host=0.0.0.0``); ``port`` pins
        the server's port (``-o serve_port=N``)."""
        group = ServerGroup.for_base(base_model, backend, host)
        with group.locked():
            group.ensure(base_model, backend, host, port)
            self.path.mkdir(parents=True, exist_ok=True)
            _write_secret(self.path / "key", group.key() if backend == "vllm" else _kept_key(self.name))
            record = {
                "name": self.name,
                "model": model,
                "base_model": base_model,
                "adapter_dir": adapter_dir,
                "group": group.group_id,
                "backend": backend,
                "run_id": run_id,
                "created": time.time(),
            }
            write_json_atomic(self.path / "deployment.json", record)
            group.ensure_running()

    def start(self) -> None:
        """Make sure the server of this deployment's group runs (after a crash)."""
        group = self.group()
        with group.locked():
            group.ensure_running()

    def status(self) -> DeploymentStatus:
        record = self.record()
        group = ServerGroup(record["group"]) if record.get("group") else None
        server = group.state() if group else {}
        pid = group.server_pid() if group else None
        alive = bool(group) and group.server_alive()
        loaded = server.get("deployments") or {}
        failures = server.get("failed") or {}
        state, error, port = "creating", None, None
        if alive and server.get("state") == "ready" and self.name in loaded:
            state, port = "ready", server.get("port")
        elif self.name in failures:
            state, error = "failed", failures[self.name]
        elif pid is None and time.time() - float(record.get("created") or 0) < 30:
            pass  # between starting the server and recording its pid
        elif server.get("state") == "failed" or not alive:
            state = "failed"
            error = server.get("error") or "the chat server process is not running"
            if group:
                error += _log_tail(group.path / "server.log")
        details: dict[str, Any] = {"server_group": record.get("group"), "backend": record.get("backend", "builtin")}
        if server.get("memory"):
            details["memory"] = server["memory"]
            details["deployments_in_server"] = sorted(loaded)
        return DeploymentStatus(
            name=self.name,
            model=record.get("model", ""),
            state=state,
            endpoint_url=f"http://{server.get('host', '127.0.0.1')}:{port}/v1" if port else None,
            pid=pid if alive else None,
            port=port,
            error=error,
            created=record.get("created"),
            run_id=record.get("run_id"),
            details=details,
        )

    def remove(self) -> None:
        """Remove this deployment and return once its server no longer answers for it: the last
        one stops the server (which lets requests in flight finish, bounded); any other is
        checked at the server itself (``GET /v1/models/NAME`` with its key answers 401 or 404).
        Raises :class:`StillServing` when the server still answers for it after the wait."""
        group = self.group() if self.record().get("group") else None
        if group is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            key = self.key()
        except OSError:
            key = None
        with group.locked():
            shutil.rmtree(self.path, ignore_errors=True)
            if not group.members():
                group.stop()
                if group.server_alive():
                    raise StillServing(f"the server of {self.name} (pid {group.server_pid()}) did not stop")
                shutil.rmtree(group.path, ignore_errors=True)
                return
        deadline = time.monotonic() + _UNLOAD_WAIT_S
        while group.server_alive() and self._answered_by(group, key) is not False:
            if time.monotonic() > deadline:
                raise StillServing(f"the server still answers for {self.name} {_UNLOAD_WAIT_S:g} s after it was "
                                   f"removed (pid {group.server_pid()}; see {group.path / 'server.log'})")
            timescale.sleep(0.05)
        # no longer answered; its adapter's memory is given back once the generation in progress
        # (of another deployment) ends: wait for that too, within the same bound, without failing
        while group.server_alive() and self.name in (group.state().get("deployments") or {}) \
                and time.monotonic() < deadline:
            timescale.sleep(0.05)

    def _answered_by(self, group: ServerGroup, key: str | None) -> bool | None:
        """Whether the group's server answers 200 for this deployment (None: cannot tell yet)."""
        import urllib.error
        import urllib.request

        state = group.state()
        if state.get("state") != "ready" or not state.get("port"):
            return None
        if key is None:
            return self.name in (state.get("deployments") or {})
        host = state.get("host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        request = urllib.request.Request(f"http://{host}:{state['port']}/v1/models/{self.name}",
                                         headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return False if exc.code in (401, 404) else None
        except OSError:
            return None
