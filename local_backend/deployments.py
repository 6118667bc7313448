"""Local deployments: one directory and one detached chat server per deployment.

    <name>/deployment.json   name, model, base model, adapter directory, created
    <name>/key               the bearer key, mode 0600 (never printed or returned)
    <name>/server.json       written by the server: loading | ready (pid, port) | failed | stopped
    <name>/server.pid        the pid the CLI started
    <name>/server.log        the server's request log and errors (no headers, no key)
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_backend import procs
from local_backend._files import deployments_dir, read_json, write_json_atomic

SERVER_MODULE = "local_backend.server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


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


class DeploymentDir:
    def __init__(self, name: str) -> None:
        if not valid_name(name):
            raise KeyError(name)
        self.name = name
        self.path = deployments_dir() / name

    @classmethod
    def all(cls) -> list["DeploymentDir"]:
        if not deployments_dir().is_dir():
            return []
        return [cls(p.name) for p in sorted(deployments_dir().iterdir()) if (p / "deployment.json").is_file()]

    def exists(self) -> bool:
        return (self.path / "deployment.json").is_file()

    def record(self) -> dict[str, Any]:
        return read_json(self.path / "deployment.json", {}) or {}

    def key(self) -> str:
        return (self.path / "key").read_text().strip()

    def server_pid(self) -> int | None:
        try:
            return int((self.path / "server.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def create(self, *, model: str, base_model: str, adapter_dir: str | None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        key_path = self.path / "key"
        key_path.unlink(missing_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        write_json_atomic(
            self.path / "deployment.json",
            {"name": self.name, "model": model, "base_model": base_model, "adapter_dir": adapter_dir, "created": time.time()},
        )
        self.start()

    def start(self) -> None:
        (self.path / "server.json").unlink(missing_ok=True)
        pid = procs.spawn_detached(SERVER_MODULE, str(self.path), log_path=self.path / "server.log", cwd=self.path)
        (self.path / "server.pid").write_text(str(pid))

    def status(self) -> DeploymentStatus:
        record = self.record()
        server = read_json(self.path / "server.json", {}) or {}
        pid = self.server_pid()
        alive = procs.pid_alive(pid, expect=str(self.path))
        state, error, port = "creating", None, None
        if server.get("state") == "ready" and alive:
            state, port = "ready", server.get("port")
        elif pid is None and time.time() - float(record.get("created") or 0) < 30:
            pass  # between starting the server and recording its pid
        elif server.get("state") == "failed" or not alive:
            state = "failed"
            error = server.get("error") or "the chat server process is not running"
        return DeploymentStatus(
            name=self.name,
            model=record.get("model", ""),
            state=state,
            endpoint_url=f"http://127.0.0.1:{port}/v1" if port else None,
            pid=pid if alive else None,
            port=port,
            error=error,
            created=record.get("created"),
        )

    def remove(self) -> None:
        procs.stop_process(self.server_pid(), expect=str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
