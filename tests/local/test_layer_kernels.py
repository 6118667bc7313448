"""Which layer kernels the trainer takes (local_backend/layer_kernels.py), decided without a
GPU: Liger only on CUDA, only for covered architectures with a SiLU MLP, only where
liger_kernel imports; every fallback says why. (Liger's kernels are Triton kernels: their
numerics against transformers are checked on CUDA by benchmarks/_cuda_checks.py.)"""

from __future__ import annotations

import importlib.util

import pytest
import transformers

from local_backend import layer_kernels


def _config(family: str, **extra):  # type: ignore[no-untyped-def]
    common = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    classes = {"llama": transformers.LlamaConfig, "phi3": transformers.Phi3Config, "gemma2": transformers.Gemma2Config,
               "qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}
    return classes[family](**common, **extra)


def test_cpu_and_torch_mode_keep_transformers_kernels() -> None:
    model = transformers.AutoModelForCausalLM.from_config(_config("llama"))
    assert layer_kernels.apply(model, "torch", "cuda") == ("torch", "asked for")
    for mode in ("auto", "liger"):
        path, why = layer_kernels.apply(model, mode, "cpu")
        assert path == "torch" and "CUDA only" in why
    assert "FSDP" in layer_kernels.apply(model, "liger", "cuda", sharded=True)[1]
    assert "forward" not in model.model.norm.__dict__  # nothing patched
    with pytest.raises(ValueError, match="layer_kernels"):
        layer_kernels.apply(model, "fast", "cpu")


def test_uncovered_architectures_and_activations_are_refused_with_a_reason() -> None:
    assert "gemma2 is not covered" in layer_kernels.why_not(_config("gemma2"), "cuda")
    assert "not SiLU" in layer_kernels.why_not(_config("llama", hidden_act="gelu"), "cuda")


@pytest.mark.parametrize("family", ["llama", "phi3", "mistral", "qwen2"])
def test_covered_architectures_need_liger_kernel(family: str) -> None:
    reason = layer_kernels.why_not(_config(family), "cuda")
    if importlib.util.find_spec("liger_kernel") is None:
        assert reason is not None and "liger_kernel not importable" in reason
    else:  # installed (with Triton): covered
        assert reason is None or "not importable" in reason


def test_a_model_not_on_the_gpu_keeps_torch() -> None:
    model = transformers.AutoModelForCausalLM.from_config(_config("llama"))
    path, why = layer_kernels.apply(model, "liger", "cuda")
    assert path == "torch" and ("not importable" in why or "not on the GPU" in why)
