"""The vLLM path: the command line cloudtune builds for vLLM's OpenAI server (LoRA enabled,
each deployment a module, loopback, no key on the command line), and the choice between vLLM
and the built-in server, which `cloudtune providers` reports. Serving through vLLM itself
needs a CUDA machine with vllm installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune import errors


def _adapter(path: Path, rank: int) -> str:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return str(path)


def test_command_serves_each_deployment_as_a_lora_module(tmp_path: Path) -> None:
    from local_backend.vllm_server import VLLM_MODULE, build_command, server_environment

    loras = {"ft-b": _adapter(tmp_path / "b", 8), "ft-a": _adapter(tmp_path / "a", 16)}
    command = build_command("/models/base", host="127.0.0.1", port=8123, loras=loras, max_loras=2, python="py")
    assert command[:3] == ["py", "-m", VLLM_MODULE]
    flags = dict(zip(command[3::2], command[4::2]))
    assert flags["--model"] == "/models/base" and flags["--host"] == "127.0.0.1" and flags["--port"] == "8123"
    assert "--enable-lora" in command and command[command.index("--max-loras") + 1] == "2"
    assert command[command.index("--max-lora-rank") + 1] == "64"  # room for later adapters up to r=64
    modules = command[command.index("--lora-modules") + 1 :]
    assert modules == [f"ft-a={loras['ft-a']}", f"ft-b={loras['ft-b']}"]
    assert not any("key" in part.lower() for part in command)  # the key is not visible in ps

    env = server_environment("secret-key")
    assert env["VLLM_API_KEY"] == "secret-key" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"

    big = build_command("/m", host="127.0.0.1", port=1, loras={"x": _adapter(tmp_path / "x", 100)}, max_loras=1)
    assert big[big.index("--max-lora-rank") + 1] == "128" and big[big.index("--max-loras") + 1] == "1"
    bare = build_command("/m", host="127.0.0.1", port=1, loras={})
    assert "--lora-modules" not in bare and "--enable-lora" in bare


def test_without_cuda_or_vllm_the_builtin_server_is_chosen_and_reported(provider, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    import torch

    from local_backend.vllm_server import choose_backend

    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        pytest.fail("this test describes a machine without vLLM on CUDA")  # CI has neither
    backend, reason = choose_backend(has_adapter=True)
    assert backend == "builtin" and ("not installed" in reason or "no CUDA" in reason)
    assert choose_backend(has_adapter=False)[0] == "builtin"
    assert choose_backend(has_adapter=True, requested="builtin")[0] == "builtin"
    with pytest.raises(ValueError, match="serve_backend=vllm"):
        choose_backend(has_adapter=True, requested="vllm")

    serving = provider.check().details["serving"]
    assert serving.startswith("built-in server (") and reason in serving

    from providers.local import LocalProvider

    insisting = LocalProvider({"serve_backend": "vllm"})
    assert not insisting.check().ok
    with pytest.raises(errors.InvalidInput, match="serve_backend=vllm"):
        insisting.deploy(str(tiny_model_dir), name="x")
    assert insisting.list_deployments() == []
