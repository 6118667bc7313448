"""QLoRA under ``-o fsdp=true``: the sharding mechanics, checked on CPU with two gloo processes.

The product trains 4-bit only on CUDA (DEVELOPERS.md, "4-bit on CPU"), and CI has no GPU, so
this test does not train: it checks the part that FSDP2 adds to QLoRA and that is device
independent. The base is loaded by the shipped loader with the shipped choice of 4-bit
storage for a sharded base (NF4 packed into bf16, local_backend/recipe.py ``load_options``),
LoRA is added, and the shipped sharding (local_backend/fsdp.py) cuts every packed 4-bit weight
in half along dim 0. A forward then all-gathers each layer's packed weight as a plain tensor,
bitsandbytes' ``Linear4bit`` re-attaches the quantisation state it keeps on the module
(``fix_4bit_weight_quant_state_from_module``), and the logits and the LoRA gradients must be
those of the same 4-bit model unsharded.

Only train-mode forwards with autograd on are run, as training does: bitsandbytes' CPU code
then dequantises and multiplies on every CPU. An eval-mode no-grad forward on a CPU with
AVX512-BF16 instead repacks the weight for a CPU kernel and marks the module's quantisation
state as repacked; under FSDP the next gather brings back the unpacked bytes, so the outputs
are wrong from then on (measured 2026-11-25: logits off by 0.62 at a magnitude of 0.6). That
branch tests ``x.device.type == "cpu"``, so CUDA never takes it; it is one more reason 4-bit
stays CUDA-only and is not exercised here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def _build(model_dir: str):  # type: ignore[no-untyped-def]
    """The tiny base in 4-bit as a sharded QLoRA run loads it, with LoRA on top (non-zero B,
    so every LoRA weight gets a gradient) and non-reentrant activation checkpointing, as the
    CUDA recipe trains."""
    import torch
    from peft import LoraConfig, get_peft_model

    from local_backend.recipe import Recipe, load_options
    from local_backend.sources import load_model, resolve_source

    qlora = Recipe("cuda", use_4bit=True, gradient_checkpointing=True, optimizer="adamw_fused", description="")
    options = load_options(qlora, shard_base=True)
    assert options["quantize_4bit"] and options["quant_storage"] == torch.bfloat16
    # The CUDA path loads onto its GPU; here the same 4-bit weights are made on the CPU.
    model = load_model(resolve_source(model_dir), quantize_4bit=True, quant_storage=options["quant_storage"], device_map={"": "cpu"})
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS, init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    model.train()
    return model


def _step(model, ids):  # type: ignore[no-untyped-def]
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.logits.detach().float(), grads


def _four_bit_layers(model):  # type: ignore[no-untyped-def]
    import bitsandbytes as bnb

    return {name: m for name, m in model.get_base_model().get_decoder().named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def _rank(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from local_backend.fsdp import ShardedDataParallel

        ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(3))
        whole = _build(model_dir)
        whole_logits, whole_grads = _step(whole, ids)

        parallel = ShardedDataParallel()
        sharded = parallel.prepare_model(_build(model_dir), device="cpu", emit=lambda message, **data: None)
        shards = {}
        for name, module in _four_bit_layers(sharded).items():
            weight = module.weight
            shards[name] = {"type": type(weight).__name__, "dtype": str(weight.dtype), "whole_rows": weight.shape[0],
                            "local_rows": weight.to_local().shape[0], "weights": module.in_features * module.out_features}
        steps = [_step(sharded, ids) for _ in range(2)]  # the second one re-gathers after the first resharded
        after = {name: type(module.weight).__name__ for name, module in _four_bit_layers(sharded).items()}
        torch.save({"whole": (whole_logits, whole_grads), "steps": steps, "shards": shards, "after": after,
                    "report": parallel.shard_report}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_qlora_weights_shard_in_half_and_compute_as_unsharded(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_rank, args=(port, str(tiny_model_dir), str(tmp_path)), nprocs=2, start_method="spawn")

    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        shards = result["shards"]
        assert len(shards) == 2 * 7  # q, k, v, o, gate, up, down in each of the two layers
        for name, shard in shards.items():
            # Packed NF4 (two weights a byte) in bf16 elements, sharded on dim 0: half per rank.
            assert shard["type"] == "DTensor" and shard["dtype"] == "torch.bfloat16", (name, shard)
            assert shard["whole_rows"] * 2 == shard["weights"] // 2, (name, shard)  # bytes = 4 bits a weight
            assert shard["local_rows"] * 2 == shard["whole_rows"], (name, shard)
        # The gathered weights were freed after each forward and backward: the module holds its shard again.
        assert set(result["after"].values()) == {"DTensor"}
        report = result["report"]
        for local in report["local_sharded_bytes"]:
            assert abs(local - report["sharded_bytes"] / 2) <= 0.02 * report["sharded_bytes"]

        # The gathered bytes are the unsharded weights' bytes and the same bitsandbytes kernels
        # run on them in the same process, so nothing may differ, not even rounding (measured
        # 2026-11-25: max abs difference 0.0 for logits and LoRA gradients).
        whole_logits, whole_grads = result["whole"]
        assert float(whole_logits.abs().max()) > 0.1
        assert len(whole_grads) == 2 * 2 * len(LORA_TARGETS) and all(float(g.abs().max()) > 1e-4 for g in whole_grads.values())
        for logits, grads in result["steps"]:
            torch.testing.assert_close(logits, whole_logits, rtol=0, atol=0)
            assert grads.keys() == whole_grads.keys()
            for name, grad in grads.items():
                torch.testing.assert_close(grad, whole_grads[name], rtol=0, atol=0, msg=name)
