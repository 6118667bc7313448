"""The CUDA-only checks of benchmarks/gpu_check.py (see its docstring). Tiny models: the
point is the code path on real kernels, not speed; the benchmark measures speed."""

from __future__ import annotations

import inspect
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

from benchmarks._checks import Mismatch, _close, _lora_grads, make_trainer, randomise_lora, write_chats, write_model


def flash_attention_3() -> dict[str, Any]:
    """Whether this torch offers FlashAttention-3 (``torch.nn.attention.list_flash_attention_impls``)
    and whether the trainer uses it (local_backend/attention.py, ``flash_attention_3``: activated
    where FA3's kernels import, kept only if the varlen functional check passes with it). Runs first,
    so the attention checks after it run on whatever it chose."""
    import importlib.util

    import torch

    from local_backend import attention

    figures: dict[str, Any] = {"torch": torch.__version__, "capability": ".".join(map(str, torch.cuda.get_device_capability()))}
    try:
        from torch.nn import attention as torch_attention

        figures["offered"] = torch_attention.list_flash_attention_impls()
    except (ImportError, AttributeError) as exc:
        figures["offered"] = f"no registry: {exc}"
    for module in ("flash_attn_interface", "flash_attn"):
        figures[f"{module} importable"] = importlib.util.find_spec(module) is not None
    figures["state"] = attention.flash_attention_3("cuda")
    try:
        figures["active"] = torch_attention.current_flash_attention_impl()
    except (NameError, AttributeError):
        figures["active"] = None
    return figures


def fast_attention() -> dict[str, Any]:
    """Which call of torch's flash varlen kernel the functional check chose for each kind of
    layer, and its numerics at a realistic size (forward and backward) against the exact path."""
    import torch

    from local_backend import attention

    try:
        from torch.nn.attention.varlen import varlen_attn

        signature = str(inspect.signature(varlen_attn))
    except ImportError as exc:
        signature = f"unavailable: {exc}"
    figures: dict[str, Any] = {"varlen_attn": signature}
    generator = torch.Generator().manual_seed(0)
    bounds = (0, 100, 357, 1000, 1024)
    for head_dim, grouped, window in ((96, False, None), (96, False, 64), (128, True, None), (128, True, 64), (256, True, None)):
        fast = attention.prepare(head_dim, grouped, window, "cuda")
        key = f"d{head_dim}{' gqa' if grouped else ''}{f' window {window}' if window else ''}"
        entry: dict[str, Any] = {"chosen": fast.name if fast else None, "tried": attention.probe_log[(head_dim, grouped, window)]}
        heads, kv = (8, 2) if grouped else (8, 8)
        tokens = bounds[-1]
        q = torch.randn(1, heads, tokens, head_dim, generator=generator)
        k = torch.randn(1, kv, tokens, head_dim, generator=generator)
        v = torch.randn(1, kv, tokens, head_dim, generator=generator)
        grad = torch.randn(1, tokens, heads, head_dim, generator=generator)
        inputs = [t.cuda().to(torch.bfloat16).requires_grad_(True) for t in (q, k, v)]
        out, _ = attention.varlen_attention_forward(
            None, *inputs, None, scaling=head_dim**-0.5, sliding_window=window,
            cu_seq_lens_q=torch.tensor(bounds, dtype=torch.int32, device="cuda"),
            max_length_q=max(b - a for a, b in zip(bounds, bounds[1:])), cu_seq_lens_host=bounds,
        )
        out.backward(grad.cuda().to(torch.bfloat16))
        ref_in = [t.cuda().requires_grad_(True) for t in (q, k, v)]
        ref = attention.exact_attention(*(t[0].transpose(0, 1) for t in ref_in), bounds, scale=head_dim**-0.5, window=window)
        ref.unsqueeze(0).backward(grad.cuda())
        entry["forward_error"] = _close(f"{key} forward", out, ref.unsqueeze(0), rtol=2e-2, atol=2e-2)
        entry["grad_error"] = max(_close(f"{key} grad", a.grad, b.grad, rtol=5e-2, atol=5e-2) for a, b in zip(inputs, ref_in))
        figures[key] = entry
    if not any(entry.get("chosen") for name, entry in figures.items() if isinstance(entry, dict)):
        raise Mismatch(f"no fast varlen call passed its functional check: {figures}")
    return figures


def bnb_settings() -> dict[str, Any]:
    """The 4-bit base as the trainer loads it: NF4, double quantisation, bf16 compute."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="gpucheck-bnb-"))
    model = write_model(work / "model", "llama")
    trainer = make_trainer(model, write_chats(work / "train.jsonl", 8), work / "out", device="cuda", quantize="4bit")
    import bitsandbytes as bnb

    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not layers:
        raise Mismatch("no bitsandbytes Linear4bit layer in the 4-bit model")
    seen = {
        "layers": len(layers),
        "compute_dtype": sorted({str(m.compute_dtype) for m in layers}),
        "quant_type": sorted({m.weight.quant_type for m in layers}),
        "double_quant": sorted({bool(m.weight.quant_state.nested) for m in layers}),
        "head": type(trainer.model.get_base_model().get_output_embeddings()).__name__,
        "lora_dtype": sorted({str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}),
    }
    if seen["compute_dtype"] != [str(torch.bfloat16)] or seen["quant_type"] != ["nf4"] or seen["double_quant"] != [True]:
        raise Mismatch(f"4-bit settings: {seen}")
    return seen


def _count_syncs(model: Path, data: Path, out: Path, steps: int, loss_impl: str) -> tuple[int, dict[str, int], str]:
    """Synchronising calls during training (torch's sync debug mode), each attributed to the
    innermost frame of this project or, failing that, of the library that made it."""
    import traceback

    import torch

    trainer = make_trainer(model, data, out, device="cuda", quantize="4bit", max_steps=steps, log_every=1000,
                           batch_size=2, gradient_checkpointing=True, loss_impl=loss_impl)
    torch.cuda.synchronize()
    where: dict[str, int] = {}
    count = 0

    def record(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        nonlocal count
        if "synchroniz" not in str(message).lower():
            return
        count += 1
        frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        ours = [f for f in frames if "/local_backend/" in f.filename]
        frame = (ours or frames)[-1]
        library = f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}"
        key = f"{Path(frame.filename).name}:{frame.lineno} via {library}"
        where[key] = where.get(key, 0) + 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train(resume=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return count, where, trainer.recipe.activation_offload


def host_syncs() -> dict[str, Any]:
    """Host synchronisations per optimiser step (torch's sync debug mode): the marginal count
    between a 4-step and a 10-step run with one log line at the end, with our chunked loss and
    with Liger's fused loss (where installed)."""
    import importlib.util

    work = Path(tempfile.mkdtemp(prefix="gpucheck-sync-"))
    model = write_model(work / "model", "phi3")
    data = write_chats(work / "train.jsonl", 48, long=True)
    figures: dict[str, Any] = {}
    impls = ["chunked"] + (["liger"] if importlib.util.find_spec("liger_kernel") else [])
    for impl in impls:
        short, _, _ = _count_syncs(model, data, work / f"{impl}-a", 4, impl)
        long, where, offload = _count_syncs(model, data, work / f"{impl}-b", 10, impl)
        figures[impl] = {"syncs_4_steps": short, "syncs_10_steps": long, "per_step": (long - short) / 6, "where": where,
                         "activation_offload": offload}  # auto's choice: the count includes its copies
    if figures["chunked"]["per_step"] > 0.5:
        raise Mismatch(f"{figures['chunked']['per_step']:.1f} host syncs per step with the chunked loss: {figures}")
    return figures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_one_rank() -> dict[str, Any]:
    """FSDP2 with one rank, a 4-bit base and activation checkpointing against the same model
    unsharded: token NLLs and LoRA gradients."""
    import torch
    import torch.distributed as dist

    from local_backend.fsdp import ShardedDataParallel

    work = Path(tempfile.mkdtemp(prefix="gpucheck-fsdp-"))
    model = write_model(work / "model", "llama")
    data = write_chats(work / "train.jsonl", 16, long=True)
    rendezvous = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    saved = {name: os.environ.get(name) for name in rendezvous}
    os.environ.update(rendezvous)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        results = []
        for parallel in (ShardedDataParallel(), None):
            trainer = make_trainer(model, data, work / f"out-{parallel is None}", device="cuda", quantize="4bit",
                                   gradient_checkpointing=True, packing=True, parallel=parallel, group_by_length=False)
            randomise_lora(trainer.model)
            batch = trainer.collate(trainer._epoch_rows(0)[:2])
            nll, _ = trainer.token_nll(batch, want_tokens=True)
            nll.sum().backward()
            results.append((nll.detach(), _lora_grads(trainer.model), getattr(trainer.parallel, "shard_report", None)))
        (sharded, sharded_grads, report), (plain, plain_grads, _) = results
        figures = {"tokens": int(plain.numel()), "shard_report": report,
                   "nll_error": _close("FSDP nll", sharded, plain, rtol=1e-2, atol=1e-2)}
        if set(sharded_grads) != set(plain_grads):
            raise Mismatch(f"LoRA parameters differ: {sorted(set(sharded_grads) ^ set(plain_grads))[:4]}")
        figures["grad_error"] = max(_close(f"FSDP grad {n}", sharded_grads[n], g, rtol=5e-2, atol=1e-4) for n, g in plain_grads.items())
        return figures
    finally:
        dist.destroy_process_group()
        for name, value in saved.items():  # later processes (the benchmark's) must not see a rendezvous
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def fused_lora_speed() -> dict[str, Any]:
    """Forward + backward of one NF4 LoRA layer at Phi-3-mini's MLP size (3072 -> 8192, r=16,
    16k tokens, bf16 autocast, fp32 LoRA weights): PEFT's forward (reference) against the fused
    path, milliseconds per step and peak memory above the inputs."""
    import time

    import torch

    from benchmarks._checks import lora_layer
    from local_backend import fused_lora

    _, layer = lora_layer("nf4", 3072, 8192, "cuda", 0.0)
    layer.train()
    x = torch.randn(8, 2048, 3072, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(8, 2048, 8192, device="cuda", dtype=torch.bfloat16)
    figures: dict[str, Any] = {}
    for kernel in ("peft", "fused"):
        (fused_lora.install if kernel == "fused" else fused_lora.uninstall)(layer)

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = layer(x)
            y.backward(grad)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        figures[kernel] = {"ms_per_step": round((time.perf_counter() - began) * 100, 3),
                           "peak_above_inputs_gib": round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)}
        x.grad = None
        layer.zero_grad(set_to_none=True)
    figures["speedup_vs_peft"] = round(figures["peft"]["ms_per_step"] / figures["fused"]["ms_per_step"], 3)
    figures["memory_vs_peft"] = round(figures["fused"]["peak_above_inputs_gib"] / max(figures["peft"]["peak_above_inputs_gib"], 1e-9), 3)
    return figures


def trainer_kernels(family: str, option: str) -> dict[str, Any]:
    """The trainer over a 4-bit base (bf16 autocast, activation checkpointing, packed batch of
    several sequences with position ids restarting, randomised LoRA) with ``option`` at its
    fast value (``lora_kernel=fused`` / ``layer_kernels=liger``) against its plain value
    (``peft`` / ``torch``): logits, token NLLs and every LoRA gradient. Fails when the fast
    path was not chosen (its functional check's reason is in the error)."""
    import torch

    work = Path(tempfile.mkdtemp(prefix=f"gpucheck-{option}-{family}-"))
    model = write_model(work / "model", family)
    data = write_chats(work / "train.jsonl", 16, long=True)
    fast, plain = {"lora_kernel": ("fused", "peft"), "layer_kernels": ("liger", "torch")}[option]
    others = {"lora_kernel": "peft"} if option == "layer_kernels" else {"layer_kernels": "torch"}
    results = {}
    for value in (plain, fast):
        trainer = make_trainer(model, data, work / f"out-{value}", device="cuda", quantize="4bit", packing=True,
                               gradient_checkpointing=True, group_by_length=False, **{option: value}, **others)
        chosen = trainer.recipe.kernels[option]
        if not chosen.startswith(value):
            raise Mismatch(f"{option}={value} asked for, got {chosen}")
        randomise_lora(trainer.model)
        trainer.model.train()
        batch = trainer.collate(trainer._epoch_rows(0)[:3])
        with torch.no_grad(), trainer.recipe.autocast():
            inputs = {k: v.to("cuda") if hasattr(v, "to") else v for k, v in batch.items() if k not in ("labels", "sequence_ids")}
            logits = trainer.model(**inputs, use_cache=False).logits.float()  # the packed call token_nll makes
        nll, _ = trainer.token_nll(batch, want_tokens=True)
        nll.sum().backward()
        results[value] = (logits, nll.detach(), _lora_grads(trainer.model), chosen)
    (ref_logits, ref_nll, ref_grads, ref_chosen), (logits, nll, grads, chosen) = results[plain], results[fast]
    figures: dict[str, Any] = {"chosen": chosen, "reference": ref_chosen, "segments": len(batch["cu_seq_lens_host"]) - 1,
                               "logits_error": _close(f"{option} logits", logits, ref_logits, rtol=3e-2, atol=3e-2),
                               "nll_error": _close(f"{option} nll", nll, ref_nll, rtol=3e-2, atol=3e-2)}
    if set(grads) != set(ref_grads) or not grads:
        raise Mismatch(f"LoRA parameters differ: {sorted(set(grads) ^ set(ref_grads))[:4]}")
    figures["grad_error"] = max(_close(f"{option} grad {n}", grads[n], g, rtol=5e-2, atol=1e-3) for n, g in ref_grads.items())
    return figures


def _write_llama(out: Path, *, hidden: int, layers: int, intermediate: int) -> Path:
    """A random Llama-shaped model, bigger than the tiny ones: its activations must be worth measuring."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from benchmarks._checks import WORDS
    from local_backend.tiny import build_tokenizer

    tokenizer = build_tokenizer([" ".join(WORDS)])
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                                      num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                                      max_position_embeddings=2048, tie_word_embeddings=False,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def activation_offload(device: str = "cuda") -> dict[str, Any]:
    """activation_offload=cpu (the checkpointed layers' inputs in pinned host memory, copied on a side
    stream) against none, and every 2nd layer checkpointed, on one packed micro-batch (16 x 512 tokens)
    of a random 16-layer Llama (hidden 1024, bf16 base): same token NLL and LoRA gradients, lower
    max_memory_allocated over forward + backward by at least half of the inputs it moves; and that
    ``auto`` chose cpu on CUDA. (``device="cpu"`` runs the same comparison small, without the memory part.)"""
    import gc
    import random
    import time

    import torch

    from local_backend import checkpointing
    from local_backend.data import Row

    on_cuda = device == "cuda"
    layers, hidden, rows, length = (16, 1024, 16, 512) if on_cuda else (4, 128, 4, 64)
    work = Path(tempfile.mkdtemp(prefix="gpucheck-offload-"))
    model = _write_llama(work / "model", hidden=hidden, layers=layers, intermediate=hidden * 11 // 4)
    data = write_chats(work / "train.jsonl", 8)
    figures: dict[str, Any] = {"functional_check": (checkpointing.offload_check() or "passed") if on_cuda else "cpu",
                               "layers": layers, "tokens": rows * length}
    rng = random.Random(0)
    results = {}
    for name, options in (("none", {"activation_offload": "none"}), ("auto", {}),
                          ("every 2nd, cpu", {"activation_offload": "cpu", "checkpoint_every_n_layers": 2})):
        if not on_cuda and name == "auto":
            options = {"activation_offload": "cpu"}
        trainer = make_trainer(model, data, work / f"out-{len(results)}", device=device, quantize="none",
                               gradient_checkpointing=True, packing=True, group_by_length=False, **options)
        vocab = trainer.model.get_base_model().config.vocab_size
        if not results:
            ids = [[rng.randrange(3, vocab) for _ in range(length)] for _ in range(rows)]
        batch = trainer.collate([Row(i, list(i), list(range(length))) for i in ids])
        randomise_lora(trainer.model)
        trainer.model.train()
        entry: dict[str, Any] = {"offload": trainer.recipe.activation_offload}
        offloader = trainer.recipe.offloader
        for attempt in ("warm-up", "measured"):
            moved_before = offloader.moved if offloader else 0
            trainer.model.zero_grad(set_to_none=True)
            if on_cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            began = time.perf_counter()
            nll, _ = trainer.token_nll(batch, want_tokens=True)
            nll.float().sum().backward()
            if on_cuda:
                torch.cuda.synchronize()
                entry["peak_mib"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
            entry["seconds"] = round(time.perf_counter() - began, 4)
        entry["moved_per_pass"] = offloader.moved - moved_before if offloader else 0
        results[name] = (nll.detach().float().cpu(), {n: g.float().cpu() for n, g in _lora_grads(trainer.model).items()}, entry)
        figures[name] = entry
        del trainer, nll, batch
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
    reference, reference_grads, _ = results["none"]
    for name in ("auto", "every 2nd, cpu"):
        nll, grads, entry = results[name]
        entry["nll_error"] = _close(f"offload {name} nll", nll, reference, rtol=1e-2, atol=1e-2)
        entry["grad_error"] = max(_close(f"offload {name} grad {n}", grads[n], g, rtol=5e-2, atol=1e-4)
                                  for n, g in reference_grads.items())
    if results["auto"][2]["offload"] != "cpu":
        raise Mismatch(f"activation_offload auto chose {results['auto'][2]['offload']!r}, not cpu: {figures}")
    if results["auto"][2]["moved_per_pass"] != layers or results["every 2nd, cpu"][2]["moved_per_pass"] != layers // 2:
        raise Mismatch(f"the hooks should move one tensor per checkpointed layer: {figures}")
    if on_cuda:
        inputs_mib = layers * rows * length * hidden * 2 / 2**20  # bf16 layer inputs the offload moves
        saved = figures["none"]["peak_mib"] - figures["auto"]["peak_mib"]
        figures["inputs_mib"], figures["saved_mib"] = round(inputs_mib, 1), round(saved, 1)
        figures["peak_ratio"] = round(figures["auto"]["peak_mib"] / figures["none"]["peak_mib"], 3)
        if saved < 0.5 * inputs_mib:
            raise Mismatch(f"offloading saved {saved:.0f} MiB of peak memory, expected >= {0.5 * inputs_mib:.0f}: {figures}")
    return figures
