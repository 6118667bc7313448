"""The per-device recipe, decided without a GPU: what CUDA gets (4-bit or bf16 base, fused
AdamW, non-reentrant checkpointing, dropout 0, padding-free + length-grouped batches,
chunked loss) and what CPU keeps (fp32, plain AdamW, plain loss); what is refused up front."""

from __future__ import annotations

import pytest

from local_backend import recipe
from local_backend.trainer import TrainConfig


def _config(**overrides) -> TrainConfig:  # type: ignore[no-untyped-def]
    return TrainConfig(base_model="m", train_file="t.jsonl", **overrides)


def test_cuda_recipe_is_4bit_with_fused_adamw_and_checkpointing_by_default() -> None:
    chosen = recipe.choose(_config(), "cuda")
    assert (chosen.use_4bit, chosen.optimizer, chosen.gradient_checkpointing) == (True, "adamw_fused", True)
    assert "bf16 autocast" in chosen.description
    bf16 = recipe.choose(_config(quantize="none"), "cuda")
    assert not bf16.use_4bit and "bf16 base" in bf16.description
    assert recipe.choose(_config(optimizer="paged_adamw_8bit"), "cuda").optimizer == "paged_adamw_8bit"


def test_cpu_recipe_stays_plain_fp32() -> None:
    chosen = recipe.choose(_config(), "cpu")
    assert (chosen.use_4bit, chosen.optimizer, chosen.gradient_checkpointing) == (False, "adamw", False)
    with pytest.raises(ValueError, match="CUDA"):
        recipe.choose(_config(quantize="4bit"), "cpu")


def test_auto_hyperparameters_on_cuda_use_no_lora_dropout_and_refuse_what_cannot_run() -> None:
    from cloudtune import errors
    from local_backend.hyperparams import build_train_config

    common = dict(base_model="m", train_file="t", validation_file=None, validation_split=None, epochs=None,
                  batch_size=None, learning_rate_multiplier=None, seed=None)
    cuda = build_train_config(**common, extra={}, device="cuda")
    assert cuda.lora_dropout == 0.0 and cuda.packing is None and cuda.group_by_length is None
    dpo = build_train_config(**common, extra={}, device="cuda", method="dpo", beta=0.3)
    assert dpo.method == "dpo" and dpo.dpo_beta == 0.3 and dpo.learning_rate < cuda.learning_rate
    for extra, device in (({"quantize": "4bit"}, "cpu"), ({"optimizer": "sgd"}, "cuda"), ({"loss_impl": "x"}, "cpu")):
        with pytest.raises(errors.ConfigError):
            build_train_config(**common, extra=extra, device=device)


def test_cuda_optimizer_is_torch_fused_adamw_and_steps() -> None:
    """The CUDA recipe's optimiser, built here on CPU tensors (torch's fused AdamW runs on
    CPU too): one fused kernel for all LoRA tensors, not bitsandbytes' paged 8-bit."""
    import torch

    config = _config(learning_rate=0.1)
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = recipe.build_optimizer(recipe.choose(config, "cuda"), [parameter], config)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    parameter.grad = torch.ones(3)
    optimizer.step()
    assert torch.all(parameter < 1)
