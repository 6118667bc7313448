"""Liveness of the backend's detached processes as the kernel reports it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from local_backend import procs

# The main thread leaves (pthread_exit) while another thread keeps running: the kernel then shows
# the process's leader as a zombie although the process still runs and holds its files and locks,
# as a SIGKILLed multi-threaded worker does for a moment while its last threads tear down.
_LEADER_GONE_THREAD_LEFT = (
    "import ctypes, sys, threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,)).start()\n"
    "print('ready', flush=True)\n"
    "ctypes.CDLL(None).pthread_exit(None)\n"
)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_a_process_whose_main_thread_is_a_zombie_but_another_thread_runs_is_alive() -> None:
    process = subprocess.Popen([sys.executable, "-c", _LEADER_GONE_THREAD_LEFT], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while _state(process.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(process.pid) == "Z", "the leader thread never exited"
        assert procs.pid_alive(process.pid)
        process.kill()
        process.wait(timeout=10)
        assert not procs.pid_alive(process.pid)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_an_unreaped_exited_child_is_not_alive() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _state(process.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(process.pid) == "Z"
    assert not procs.pid_alive(process.pid)
    process.wait(timeout=10)


def test_a_server_caught_between_fork_and_exec_is_starting_until_the_grace_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Its command line is not yet the server's (here: a process that never becomes it): alive
    for the spawn grace after its pid was recorded, then a pid that is not ours."""
    import os

    from local_backend.deployments import _SPAWN_GRACE_S, ServerGroup

    group = ServerGroup("builtin-0123456789ab", path=tmp_path / "group")
    group.path.mkdir()
    assert not group.server_alive()  # no pid recorded
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (group.path / "server.pid").write_text(str(stranger.pid))
        assert group.server_alive()
        past = time.time() - _SPAWN_GRACE_S - 1
        os.utime(group.path / "server.pid", (past, past))
        assert not group.server_alive()
    finally:
        stranger.kill()
        stranger.wait(timeout=10)
    os.utime(group.path / "server.pid")  # recorded just now, but the process is gone
    assert not group.server_alive()


_SKIP_THEN_ASK = (
    "import importlib.util, sys\n"
    "from local_backend import procs\n"
    "hidden = procs.skip_unused_imports()\n"
    "import peft, transformers\n"
    "from transformers import AutoModelForCausalLM\n"
    "from transformers.utils import is_bitsandbytes_available, is_scipy_available, is_kernels_available\n"
    "from peft.import_utils import is_bnb_4bit_available\n"
    "def importable(name):\n"
    "    try:\n"
    "        __import__(name)\n"
    "        return True\n"
    "    except ImportError:\n"
    "        return False\n"
    "print(','.join(hidden), hidden == procs.skip_unused_imports(),\n"
    "      [importlib.util.find_spec(name) is None for name in hidden],\n"
    "      is_bitsandbytes_available(), is_bnb_4bit_available(), is_scipy_available(), is_kernels_available(),\n"
    "      [importable(name) for name in hidden], sep='|')\n"
)


def test_a_cpu_process_treats_unused_packages_as_absent_and_peft_and_transformers_agree() -> None:
    """Workers, servers and ranks call this first (bitsandbytes is CUDA-only here; scipy and the
    Hub's ``kernels`` are never called by them; importing the three costs ~1.7 s per process): after
    it, peft and transformers both say they are not installed, importing them fails cleanly, the
    model classes still load, and a second call changes nothing."""
    import importlib.util

    for name in ("bitsandbytes", "scipy", "kernels"):  # installed here: the skip is what hides them
        assert importlib.util.find_spec(name) is not None, name
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _SKIP_THEN_ASK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split("|") == ["bitsandbytes,scipy,kernels", "True", "[True, True, True]",
                                              "False", "False", "False", "False", "[False, False, False]"]
    assert "gemm_4bit_forward" not in done.stderr  # bitsandbytes' CPU-backend warning never printed


_LOAD_A_MODEL = (
    "import os, sys\n"
    "from local_backend import procs\n"
    "hidden = procs.skip_unused_imports()\n"
    "from transformers import AutoModelForCausalLM, LlamaConfig\n"
    "config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,\n"
    "                     num_attention_heads=2, num_key_value_heads=2)\n"
    "AutoModelForCausalLM.from_config(config).save_pretrained(sys.argv[1])\n"
    "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
    "print(','.join(hidden), os.environ['USE_HUB_KERNELS'], type(model).__name__, sep='|')\n"
)


def test_hub_kernels_are_off_unless_the_user_turns_them_on(tmp_path: Path) -> None:
    """transformers kernelizes a model it loads from the Hub's kernels unless told not to; the
    backend is offline, so it says no (and a model still loads with ``kernels`` hidden), while a
    user's USE_HUB_KERNELS=yes is kept and leaves ``kernels`` importable."""
    import os

    env = {key: value for key, value in os.environ.items() if key != "USE_HUB_KERNELS"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    off = subprocess.run([sys.executable, "-c", _LOAD_A_MODEL, str(tmp_path / "off")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert off.returncode == 0, off.stderr[-2000:]
    assert off.stdout.strip().split("|") == ["bitsandbytes,scipy,kernels", "no", "LlamaForCausalLM"]
    on = subprocess.run([sys.executable, "-c", _SKIP_THEN_ASK], capture_output=True, text=True,
                        env={**env, "USE_HUB_KERNELS": "yes"}, timeout=300)
    assert on.returncode == 0, on.stderr[-2000:]
    assert on.stdout.strip().split("|")[0] == "bitsandbytes,scipy"
