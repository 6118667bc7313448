"""Sharding the frozen base across the ranks of a distributed run (``-o fsdp=true``), for a
base model that does not fit one device.

Each decoder layer, then the decoder itself (its embeddings and final norm), is wrapped with
torch's FSDP2 ``fully_shard``: every rank keeps 1/N of those frozen weights and gathers a
layer's full weights only while that layer runs (forward, and again in backward). The
trainable LoRA parameters are passed as ``ignored_params``: they stay ordinary tensors,
whole on every rank, so the data-parallel code of :mod:`local_backend.parallel` (one
all-reduce of the LoRA gradients, normalised by the global token count), clipping, the
optimiser, checkpoints and ``save_pretrained`` of the adapter work exactly as without
sharding, and N processes still step exactly like one. Frozen weights get no gradient, so
FSDP never reduce-scatters anything: it only all-gathers, which gloo (CPU) supports too.

Left whole on every rank: the output head (the chunked loss of local_backend/losses.py reads
its weight directly, outside any module call that FSDP could hook) and, when the head is
tied to the input embeddings, those embeddings (FSDP needs a shared weight in one unit).

Lock-step: a rank gathers weights together with its peers, so every rank must run every
forward. A rank whose share of a micro-batch is empty runs one row with weight zero
(``lockstep`` below; the trainer's loop).

4-bit (QLoRA, CUDA only): the NF4 weights are loaded with
``bnb_4bit_quant_storage=torch.bfloat16`` (local_backend/sources.py, ``bnb_4bit_config``),
the way bitsandbytes documents for FSDP-QLoRA (https://huggingface.co/docs/bitsandbytes/fsdp_qlora,
read 2026-11-25; chosen in local_backend/recipe.py, ``load_options``). That guide runs FSDP
through accelerate (FSDP1), which the guide says shards float data only. Under FSDP2 each packed
weight is sharded on dim 0 like any tensor, the gathered weight is a plain tensor, and
bitsandbytes' ``Linear4bit`` re-attaches the quantisation state it keeps on the module
(absmax etc., whole on every rank, about 3% of the 4-bit weights with double quantisation).
tests/local/test_fsdp_qlora.py checks those mechanics on CPU with two gloo processes (bitsandbytes
0.50.2, torch 2.13): half of every 4-bit weight per rank, and logits and LoRA gradients equal to
the unsharded 4-bit model's, bit for bit (2026-11-25; the default uint8 storage sharded and
computed alike there too; an eval-mode no-grad forward on an AVX512-BF16 CPU breaks a sharded
4-bit model, a CPU-only bitsandbytes branch, see that test). On one H200 (2026-12-04,
benchmarks/gpu_check.py) one NCCL rank with a 4-bit base and activation checkpointing gave the
unsharded model's token losses and LoRA gradients exactly; several GPUs have not run yet.

Every rank first loads the WHOLE 4-bit base onto its GPU (bitsandbytes quantises while loading,
onto one device), and only then shards it: FSDP + 4-bit saves memory while training but cannot
help a 4-bit base that does not fit one GPU. A bf16 base is read into host memory and sharded
onto the GPUs layer by layer, so it never needs to fit one GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from local_backend.parallel import DataParallel


def _bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def _local(tensor: Any) -> Any:
    """The part of a parameter this rank stores (a DTensor's local shard, else the tensor)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class ShardedDataParallel(DataParallel):
    """Data parallel over LoRA gradients, with the frozen base sharded by FSDP2."""

    lockstep = True
    shards_base = True

    def prepare_model(self, model: Any, *, device: str, emit: Callable[..., None]) -> Any:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model()
        decoder = base.get_decoder()
        layers = getattr(decoder, "layers", None)
        if layers is None:
            from cloudtune import errors

            raise errors.InvalidInput(f"-o fsdp=true: {type(base).__name__} has no decoder.layers to shard layer by layer")
        trainable = {p for p in model.parameters() if p.requires_grad}
        head = base.get_output_embeddings()
        decoder_params = {id(p) for p in decoder.parameters()}
        tied = {head.weight} if head is not None and id(head.weight) in decoder_params else set()
        ignored = trainable | tied
        # Whatever FSDP does not manage must be on the device already: fully_shard moves only
        # the parameters and buffers it shards (a bf16 CUDA base is loaded on the CPU, then
        # sharded layer by layer onto the GPU: only one layer is ever whole there).
        for parameter in ignored:
            parameter.data = parameter.data.to(device)
        for name, child in base.named_children():
            if child is not decoder:
                child.to(device)
        mesh = init_device_mesh(device, (self.world_size,))
        for layer in layers:
            fully_shard(layer, mesh=mesh, ignored_params=ignored)
        fully_shard(decoder, mesh=mesh, ignored_params=ignored)

        frozen = [p for p in model.parameters() if not p.requires_grad]
        sharded = [p for p in frozen if _local(p) is not p]
        local_sharded = sum(_bytes(_local(p)) for p in sharded)
        report = {
            "world_size": self.world_size,
            "sharded_bytes": sum(_bytes(p) for p in sharded),  # a DTensor's numel is the whole tensor's
            "replicated_bytes": sum(_bytes(p) for p in frozen if _local(p) is p),
        }
        per_rank: list[int] = [0] * self.world_size
        self.dist.all_gather_object(per_rank, local_sharded)
        report["local_sharded_bytes"] = per_rank
        self.shard_report = report
        mib = 1024 * 1024
        emit(
            f"FSDP: {report['sharded_bytes'] / mib:.1f} MiB of frozen base weights sharded across {self.world_size} ranks "
            f"({max(per_rank) / mib:.1f} MiB per rank); {report['replicated_bytes'] / mib:.1f} MiB kept whole on every rank",
            fsdp=report,
        )
        return model
