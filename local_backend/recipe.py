"""How the model is built and optimised on each device.

CUDA (the recipe TRL, PEFT and bitsandbytes converge on in 2025; TRL 1.x no longer
calls ``prepare_model_for_kbit_training``):

- the frozen base is bf16 and loaded straight onto the GPU: NF4 with double
  quantisation and bf16 compute for QLoRA, plain bf16 for LoRA. It is NOT passed
  through ``prepare_model_for_kbit_training``: that upcasts embeddings, ``lm_head`` and
  norms to fp32, and since ``Linear4bit`` returns its input's dtype the whole residual
  stream would then run in fp32;
- the LoRA weights are fp32 (the optimiser updates them in full precision) and the
  forward pass runs under bf16 autocast;
- gradient checkpointing without re-entrance (no ``enable_input_require_grads`` hook);
- fused AdamW over the LoRA tensors (one kernel for all of them); paged 8-bit AdamW only
  when asked for (``optimizer: paged_adamw_8bit``): on ~25M LoRA parameters its state
  is small anyway, it launches per-tensor kernels, and its paged memory is invisible to
  ``torch.cuda.max_memory_allocated``;
- padding-free batches use variable-length attention (:mod:`local_backend.attention`);
- the LoRA product is added into the base layer's output by one fused autograd function
  (``lora_kernel``, :mod:`local_backend.fused_lora`) and Liger's RMSNorm/SwiGLU/RoPE kernels
  replace transformers' for covered architectures (``layer_kernels``,
  :mod:`local_backend.layer_kernels`), each after a one-time functional check on the real
  model, falling back to PEFT's/transformers' forward with the reason in the description.

CPU keeps the simple path: fp32 everywhere, plain AdamW, no autocast (4-bit on CPU is
refused; see DEVELOPERS.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from local_backend import checkpointing as checkpointing_mod

OPTIMIZERS = ("auto", "adamw", "adamw_fused", "paged_adamw_8bit")
LORA_KERNELS = ("auto", "fused", "peft")  # = local_backend.fused_lora.MODES (not imported: --help stays light)
LAYER_KERNELS = ("auto", "liger", "torch")  # = local_backend.layer_kernels.MODES


@dataclass
class Recipe:
    device: str
    use_4bit: bool
    gradient_checkpointing: bool
    optimizer: str
    description: str
    kernels: dict[str, str] = field(default_factory=dict)  # lora_kernel / layer_kernels -> "path: why" (build_model)
    activation_offload: str = "none"  # cpu | none (local_backend/checkpointing.py)
    checkpoint_every_n_layers: int = 1
    offloader: Any = None  # the Offloader in use, once the model is built

    def autocast(self):  # type: ignore[no-untyped-def]
        import torch

        if self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def choose(config: Any, device: str) -> Recipe:
    if config.quantize == "4bit" and device != "cuda":
        raise ValueError("4-bit training needs a CUDA GPU (bitsandbytes 4-bit on CPU is unreliable)")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {config.optimizer!r}")
    if config.lora_kernel not in LORA_KERNELS:
        raise ValueError(f"lora_kernel must be one of {', '.join(LORA_KERNELS)}, not {config.lora_kernel!r}")
    if config.layer_kernels not in LAYER_KERNELS:
        raise ValueError(f"layer_kernels must be one of {', '.join(LAYER_KERNELS)}, not {config.layer_kernels!r}")
    use_4bit = device == "cuda" and config.quantize in ("auto", "4bit")
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device == "cuda"
    offload, every_n = checkpointing_mod.resolve(config, device, bool(checkpointing))
    optimizer = config.optimizer
    if optimizer == "auto":
        optimizer = "adamw_fused" if device == "cuda" else "adamw"
    if device == "cuda":
        base = "4-bit NF4 base (double quantisation)" if use_4bit else "bf16 base"
        description = f"{'QLoRA' if use_4bit else 'LoRA'} on CUDA: {base}, fp32 LoRA weights under bf16 autocast, {optimizer}"
    else:
        description = "No CUDA GPU: training plain LoRA in fp32 on CPU (4-bit needs CUDA)"
    description += "; " + checkpointing_mod.describe(offload, every_n, bool(checkpointing))
    return Recipe(device, use_4bit, bool(checkpointing), optimizer, description,
                  activation_offload=offload, checkpoint_every_n_layers=every_n)


def load_options(recipe: Recipe, *, shard_base: bool = False) -> dict[str, Any]:
    """How the base is loaded: ``load_model`` arguments, and ``onto_gpu`` (straight onto this
    process's GPU, else into host memory)."""
    import torch

    if recipe.device != "cuda":
        return {"dtype": torch.float32, "onto_gpu": False}
    if shard_base and not recipe.use_4bit:
        # bf16 LoRA under FSDP: read into host memory, then sharded onto the GPU layer by layer.
        return {"dtype": torch.bfloat16, "onto_gpu": False}
    # QLoRA under FSDP: 4-bit weights in bf16 storage, which FSDP can shard (the default uint8
    # cannot be). The whole 4-bit base is loaded on each GPU first (a quarter of its bf16 size).
    quant_storage = torch.bfloat16 if shard_base and recipe.use_4bit else None
    return {"dtype": torch.bfloat16, "quantize_4bit": recipe.use_4bit, "quant_storage": quant_storage, "onto_gpu": True}


def build_model(recipe: Recipe, source: Any, config: Any, *, padding_free: bool, shard_base: bool = False):  # type: ignore[no-untyped-def]
    """The PEFT model, ready to train on ``recipe.device`` (``shard_base``: about to be sharded
    by FSDP, local_backend/fsdp.py)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from local_backend import attention, fused_lora, layer_kernels
    from local_backend.sources import load_model

    options = load_options(recipe, shard_base=shard_base)
    onto_gpu = options.pop("onto_gpu")
    if onto_gpu:
        model = load_model(source, device_map={"": torch.cuda.current_device()}, **options)
    else:
        model = load_model(source, **options)
        if not shard_base:  # a sharded base is moved layer by layer by FSDP (local_backend/fsdp.py)
            model.to(recipe.device)
    if padding_free:
        model.set_attn_implementation(attention.register())
    if recipe.gradient_checkpointing:
        non_reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=non_reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
        _configure_checkpointing(recipe, model)
    model.config.use_cache = False
    # before PEFT wraps the projections: Liger patches this instance's norm/MLP modules
    autocast = recipe.autocast if recipe.device == "cuda" else None
    layers = layer_kernels.apply(model, getattr(config, "layer_kernels", "auto"), recipe.device, autocast,
                                 sharded=shard_base)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()  # LoRA weights stay fp32; autocast runs the matmuls in bf16
    lora_path = fused_lora.apply(model, getattr(config, "lora_kernel", "auto"), recipe.device, autocast,
                                 sharded=shard_base)
    recipe.kernels = {"lora_kernel": f"{lora_path[0]}: {lora_path[1]}", "layer_kernels": f"{layers[0]}: {layers[1]}"}
    recipe.description += f"; LoRA kernel {lora_path[0]} ({lora_path[1]}); layer kernels {layers[0]} ({layers[1]})"
    return model


def _configure_checkpointing(recipe: Recipe, model) -> None:  # type: ignore[no-untyped-def]
    """Every Nth layer, through our checkpoint function; on CUDA the offload only after its
    one-time functional check passes (else none, and the description says why)."""
    if recipe.activation_offload == "cpu" and recipe.device == "cuda":
        failure = checkpointing_mod.offload_check()
        if failure:
            every, planned = recipe.checkpoint_every_n_layers, checkpointing_mod.describe("cpu", recipe.checkpoint_every_n_layers, True)
            recipe.activation_offload = "none"
            recipe.description = recipe.description.replace(planned, checkpointing_mod.describe("none", every, True)
                                                            + f" (no offload to host memory: its functional check failed: {failure})")
    offloader = checkpointing_mod.Offloader(recipe.device) if recipe.activation_offload == "cpu" else None
    checkpointing_mod.configure(model, every=recipe.checkpoint_every_n_layers, offloader=offloader)
    recipe.offloader = offloader


def build_optimizer(recipe: Recipe, params: list, config: Any):  # type: ignore[no-untyped-def]
    import torch

    if recipe.optimizer == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    fused = recipe.optimizer == "adamw_fused"
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None)
