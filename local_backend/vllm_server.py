"""Serving a server group through vLLM's OpenAI-compatible server, where one is installed.

On a CUDA machine with ``vllm`` importable, adapter deployments go to a vLLM server started
with ``--enable-lora``, each deployment one LoRA module named after it. cloudtune starts it,
health-checks it (``GET /health``), loads and unloads deployments at run time through vLLM's
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (enabled by
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), and stops it like the built-in server. The bearer key
goes in ``VLLM_API_KEY`` (environment, never the command line, where ``ps`` would show it).
Sources: vLLM docs "OpenAI-Compatible Server" and "LoRA Adapters" (dynamic serving), read
2026-11-25.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudtune import timescale
from local_backend._files import read_json
from local_backend.server_group import listen_address, on_stop_signals, watch_membership, write_state

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's --max-lora-rank accepts
_START_TIMEOUT_S = 900.0


def vllm_usable() -> tuple[bool, str]:
    """Whether deployments can go to vLLM here, and why (or why not)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install vllm on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return False, "vllm is installed but no CUDA device is available"
    return True, "vllm is installed and a CUDA device is available"


def choose_backend(*, has_adapter: bool, requested: str | None = None) -> tuple[str, str]:
    """``("vllm" | "builtin", reason)``. Base-model deployments always use the built-in server."""
    if requested == "builtin":
        return "builtin", "serve_backend=builtin was asked for"
    usable, reason = vllm_usable()
    if requested == "vllm" and not usable:
        raise ValueError(f"serve_backend=vllm was asked for but {reason}")
    if not has_adapter:
        return "builtin", "base-model deployments are served by the built-in server"
    return ("vllm", reason) if usable else ("builtin", reason)


def lora_rank_limit(adapter_dirs: Mapping[str, str], minimum: int = 64) -> int:
    """The smallest rank vLLM accepts that covers every adapter (and ``minimum``, for adapters added later)."""
    wanted = minimum
    for path in adapter_dirs.values():
        config = read_json(Path(path) / "adapter_config.json", {}) or {}
        wanted = max(wanted, int(config.get("r") or 0))
    return next((r for r in _LORA_RANKS if r >= wanted), _LORA_RANKS[-1])


def build_command(base_model_dir: str, *, host: str, port: int, loras: Mapping[str, str], max_loras: int = 4,
                  python: str = sys.executable, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The vLLM server command line (no secrets: the key travels in the environment)."""
    command = [
        python, "-m", VLLM_MODULE,
        "--model", base_model_dir,
        "--host", host,
        "--port", str(port),
        "--enable-lora",
        "--max-loras", str(max(max_loras, len(loras), 1)),
        "--max-lora-rank", str(lora_rank_limit(loras)),
    ]
    if loras:
        command += ["--lora-modules", *(f"{name}={path}" for name, path in sorted(loras.items()))]
    return command + list(extra_args)


def server_environment(key: str) -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_API_KEY"] = key
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return env


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _call(url: str, key: str, payload: dict[str, Any] | None = None, timeout: float = 120) -> int:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def serve_vllm(group) -> int:
    from local_backend.sources import local_path, resolve_source

    config = group.config()
    host, port = listen_address(group)
    key = group.key()  # vLLM takes one key (VLLM_API_KEY): every deployment of a vLLM group shares it
    write_state(group, state="loading")
    members = {m.name: m.record() for m in group.members()}
    loras = {name: r["adapter_dir"] for name, r in members.items() if r.get("adapter_dir")}
    port = port or _free_port(host)
    command = build_command(local_path(resolve_source(config["base_model"])), host=host, port=port, loras=loras,
                            max_loras=int(config.get("max_loras") or 4))
    child = subprocess.Popen(command, env=server_environment(key), stdin=subprocess.DEVNULL)
    stopping = threading.Event()
    on_stop_signals(stopping)
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not stopping.is_set():
        if child.poll() is not None or time.monotonic() > deadline:
            write_state(group, state="failed", pid=None, error=f"vLLM server exited with {child.returncode} (see server.log)")
            _stop_child(child)
            return 1
        try:
            if _call(f"{base}/health", key, timeout=5) == 200:
                break
        except OSError:
            pass
        timescale.sleep(1)
    if stopping.is_set():  # asked to stop while vLLM was still starting
        _stop_child(child)
        write_state(group, state="stopped", pid=None)
        return 0
    served = dict(loras)

    def sync() -> bool:
        if child.poll() is not None:  # vLLM died: say so and stop; the next deploy starts a new one
            write_state(group, state="failed", pid=None, error=f"vLLM server exited with {child.returncode} (see server.log)")
            stopping.set()
            return False
        wanted = {m.name: m.record().get("adapter_dir") for m in group.members()}
        changed = False
        for name in [n for n in served if n not in wanted]:
            _call(f"{base}/v1/unload_lora_adapter", key, {"lora_name": name})
            served.pop(name)
            changed = True
        for name, path in wanted.items():
            if path and name not in served and _call(f"{base}/v1/load_lora_adapter", key, {"lora_name": name, "lora_path": path}) == 200:
                served[name] = path
                changed = True
        return changed

    def publish() -> None:
        deployments = {name: {"adapter": name} for name in served}
        write_state(group, state="ready", port=port, host=host, ready_at=time.time(), deployments=deployments,
                     memory={"note": "vLLM preallocates GPU memory (--gpu-memory-utilization); adapters share its LoRA slots"})

    sync()
    publish()
    watch_membership(group, stopping, sync, publish)
    _stop_child(child)
    write_state(group, state="stopped", pid=None)
    return 0


def _stop_child(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
