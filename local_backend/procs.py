"""Detached helper processes (training workers, chat servers): start them in their own
session so they outlive the CLI, and tell whether one is still alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloudtune import timescale

_REPO_ROOT = Path(__file__).resolve().parent.parent
# Popen objects of children started by this process, so they can be reaped: an
# exited child that nobody waits for stays a zombie and still "exists" for kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen] = {}


def spawn_detached(module: str, *args: str, log_path: Path, cwd: Path) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
            start_new_session=True,  # not in the CLI's process group: Ctrl-C there does not reach it
            close_fds=True,
        )
    _CHILDREN[process.pid] = process
    return process.pid


# Installed packages that transformers and peft import when they find them, and that a training or
# serving process of this backend never calls: scipy (cloudtune's compare uses it; transformers
# imports scipy.optimize for its object-detection losses: ~0.35 s of CPU per process, measured
# 2026-12-06 on the 2-core CI machine; the test suite starts ~75 such processes).
UNUSED_IN_BACKEND_PROCESSES = ("scipy",)
_FALSE_WORDS = ("false", "0", "n", "no", "off")  # transformers' is_env_variable_false


def skip_unused_imports() -> list[str]:
    """In a training or serving process, treat the packages it never uses as not installed, so
    transformers and peft do not import them: bitsandbytes when there is no CUDA device, the Hub's
    ``kernels`` unless USE_HUB_KERNELS turns them on, and ``UNUSED_IN_BACKEND_PROCESSES`` always.

    bitsandbytes' 4-bit layers are CUDA-only here (the recipe refuses ``quantize="4bit"`` on a CPU,
    DEVELOPERS.md "4-bit on CPU"), yet peft imports it whenever it is installed, and its CPU
    backend pulls in torch._inductor: about 1.2 s of CPU per process (measured 2026-12-05, 2-core
    CI machine) and a "Failed to load CPU gemm_4bit_forward" warning in every log. A ``None``
    entry in ``sys.modules`` makes ``import x`` raise ImportError and ``importlib.util.find_spec``
    answer None, which is how peft and transformers ask whether a package is installed. A package
    already imported is left as it is. Call it first thing in a process's main; returns the
    packages it hid (a second call returns the same list)."""
    hidden = []
    # The Hub's kernels: transformers kernelizes every model it loads unless told not to
    # (use_kernels=None means yes while USE_HUB_KERNELS is unset: transformers 5.25.0,
    # modeling_utils.PreTrainedModel.from_pretrained, read 2026-12-06) and fetches those kernels from the
    # Hub. This backend runs offline and brings its own (Liger, fused LoRA), so they are off unless
    # the user turns them on with USE_HUB_KERNELS=yes; off, the ``kernels`` package (~0.2 s) is hidden too.
    os.environ.setdefault("USE_HUB_KERNELS", "no")
    names = list(UNUSED_IN_BACKEND_PROCESSES)
    if os.environ["USE_HUB_KERNELS"].strip().lower() in _FALSE_WORDS:
        names.append("kernels")
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
        if sys.modules[name] is None:
            hidden.append(name)
    if "bitsandbytes" not in sys.modules:
        import torch

        if not torch.cuda.is_available():
            sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
        hidden.insert(0, "bitsandbytes")
    return hidden


def _reap() -> None:
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


def pid_exists(pid: int | None) -> bool:
    """Whether some live (non-zombie) process has this pid, whatever it runs."""
    return pid_alive(pid)


def pid_alive(pid: int | None, expect: str | None = None) -> bool:
    """Whether ``pid`` runs; with ``expect``, also that its command line contains it (a
    recycled pid belonging to another program is not ours)."""
    if not pid:
        return False
    _reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by a parent that is not us) is dead for our purposes, unless
    # it is a thread-group leader whose other threads are still tearing down: after SIGKILL the
    # leader shows "Z" while its last threads still hold the process's files (and so its locks).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1:
            return False
    except (OSError, IndexError):
        pass
    if expect is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return True  # no /proc: trust the pid
        return expect in cmdline
    return True


def stop_process(pid: int | None, *, expect: str | None = None, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL. Only ever called with pids this backend recorded."""
    if not pid_alive(pid, expect):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        timescale.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        timescale.sleep(0.05)
