"""The correctness checks of benchmarks/gpu_check.py. Each returns a dict of figures and
raises ``Mismatch`` (or anything else) when the check fails; the runner records it and
goes on with the next one.

Tiny random models (a few layers, hidden 64-128) keep the CPU checks to seconds on a
shared 2-core machine; on CUDA the same checks run in bf16 over a 4-bit base."""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from typing import Any

WORDS = "ahoy matey the ship sails at dawn with gold and rum under a blue sky near the island".split()


class Mismatch(AssertionError):
    pass


def _close(name: str, got, want, *, rtol: float, atol: float) -> float:  # type: ignore[no-untyped-def]
    """Max absolute error; raises Mismatch beyond atol + rtol * max|want|."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if got.shape != want.shape:
        raise Mismatch(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    error = (got - want).abs().max().item() if got.numel() else 0.0
    limit = atol + rtol * (want.abs().max().item() if want.numel() else 0.0)
    if not error <= limit:
        raise Mismatch(f"{name}: max error {error:.3g} > {limit:.3g}")
    return error


# ---------------------------------------------------------------- tiny models and data
def tiny_config(family: str, vocab: int, *, window: int | None = 8):  # type: ignore[no-untyped-def]
    """A tiny random config of a family whose attention differs from Llama's: Phi-3 and
    Mistral with a sliding window shorter than the sequences, Gemma-2 with alternating
    windowed layers and soft-capping (attention and final logits)."""
    import transformers

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
    if family == "phi3":
        return transformers.Phi3Config(**common, num_key_value_heads=4, sliding_window=window)
    if family == "mistral":
        return transformers.MistralConfig(**common, num_key_value_heads=2, sliding_window=window)
    if family == "gemma2":
        return transformers.Gemma2Config(**common, num_key_value_heads=2, head_dim=16, sliding_window=window,
                                         attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                         query_pre_attn_scalar=16)
    if family == "llama":
        return transformers.LlamaConfig(**common, num_key_value_heads=4)
    raise ValueError(family)


def write_model(out: Path, family: str, *, window: int | None = 8) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from local_backend.tiny import build_tokenizer

    tokenizer = build_tokenizer([" ".join(WORDS)])
    config = tiny_config(family, len(tokenizer), window=window)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, name, getattr(tokenizer, name))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if family == "gemma2":  # random weights give tiny scores: scale q so soft-capping bites
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(8.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _say(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_chats(path: Path, count: int, *, seed: int = 0, long: bool = False) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for _ in range(count):
            answer = rng.randint(14, 30) if long else rng.randint(3, 12)
            messages = [{"role": "user", "content": _say(rng, rng.randint(2, 8))},
                        {"role": "assistant", "content": _say(rng, answer)}]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def write_pairs(path: Path, count: int) -> Path:
    rng = random.Random(1)
    with open(path, "w") as handle:
        for _ in range(count):
            record = {"input": {"messages": [{"role": "user", "content": _say(rng, 5)}]},
                      "preferred_output": [{"role": "assistant", "content": _say(rng, 6)}],
                      "non_preferred_output": [{"role": "assistant", "content": _say(rng, 4)}]}
            handle.write(json.dumps(record) + "\n")
    return path


def make_trainer(model: Path, data: Path, out: Path, *, parallel=None, **overrides):  # type: ignore[no-untyped-def]
    from local_backend.trainer import Trainer, TrainConfig

    settings = dict(base_model=str(model), train_file=str(data), epochs=1, batch_size=4, learning_rate=1e-2,
                    lora_r=8, lora_alpha=16, max_seq_len=96, checkpoint_every=0, seed=7, warmup_ratio=0.0)
    settings.update(overrides)
    trainer = Trainer(TrainConfig(**settings), out, parallel=parallel)
    trainer.setup()
    return trainer


def randomise_lora(model) -> None:  # type: ignore[no-untyped-def]
    """LoRA B starts at zero (the adapter is a no-op); give it weights so gradients reach A too."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def _lora_grads(model) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


# ---------------------------------------------------------------- checks
def packed_vs_reference(family: str, *, device: str = "cpu", model_dir: str | None = None) -> dict[str, Any]:
    """The trainer's padding-free forward and backward (several examples per row, variable-length
    attention, chunked loss) against transformers' own eager forward on each sequence alone."""
    import torch

    from local_backend.losses import plain_token_nll

    work = Path(tempfile.mkdtemp(prefix=f"gpucheck-{family}-"))
    model = Path(model_dir) if model_dir else write_model(work / "model", family)
    data = write_chats(work / "train.jsonl", 24, long=True)
    quantize = "4bit" if device == "cuda" else "none"
    trainer = make_trainer(model, data, work / "out", packing=True, loss_impl="chunked", device=device,
                           quantize=quantize, gradient_checkpointing=device == "cuda", group_by_length=False)
    randomise_lora(trainer.model)
    base = trainer.model.get_base_model()
    config = base.config
    rows = trainer._epoch_rows(0)[:3]
    batch = trainer.collate(rows)
    segments = len(batch["cu_seq_lens_host"]) - 1
    longest = int(batch["max_length_q"])
    window = getattr(config, "sliding_window", None)
    if window and longest <= window:
        raise Mismatch(f"the data is too short to exercise the window ({longest} <= {window})")
    trainer.model.zero_grad(set_to_none=True)
    packed, _ = trainer.token_nll(batch, want_tokens=True)
    packed.sum().backward()
    packed_grads = _lora_grads(trainer.model)
    trainer.model.zero_grad(set_to_none=True)

    # Reference: transformers' eager attention (mask, window and soft-capping as the model
    # defines them), one sequence at a time, full logits.
    ids, labels, positions = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = [i for i, p in enumerate(positions.tolist()) if p == 0] + [len(positions)]
    implementation = config._attn_implementation
    base.set_attn_implementation("eager")
    softcap = getattr(config, "final_logit_softcapping", None)
    try:
        pieces = []
        with trainer.recipe.autocast():
            for start, stop in zip(starts, starts[1:]):
                seq_labels = labels[start:stop].clone()
                seq_labels[0] = -100
                logits = trainer.model(input_ids=ids[start:stop][None].to(trainer.device), use_cache=False).logits
                # the model's forward applies its own final soft-capping (Gemma-2) to these logits
                pieces.append(plain_token_nll(logits, seq_labels[None].to(trainer.device)))
        reference = torch.cat(pieces)
        reference.sum().backward()
    finally:
        base.set_attn_implementation(implementation)
    reference_grads = _lora_grads(trainer.model)
    trainer.model.zero_grad(set_to_none=True)
    bf16 = device == "cuda"
    nll_error = _close(f"{family} token NLL", packed, reference, rtol=3e-2 if bf16 else 1e-4, atol=3e-2 if bf16 else 1e-5)
    grad_error = 0.0
    for name, grad in reference_grads.items():
        grad_error = max(grad_error, _close(f"{family} grad {name}", packed_grads[name], grad,
                                            rtol=1e-1 if bf16 else 1e-3, atol=1e-3 if bf16 else 1e-6))
    return {"family": config.model_type, "segments": segments, "longest": longest, "sliding_window": window,
            "attn_softcap": getattr(config, "attn_logit_softcapping", None), "final_softcap": softcap,
            "attention_paths": getattr(trainer, "attention_paths", []), "tokens": int(packed.numel()),
            "max_nll_error": nll_error, "max_grad_error": grad_error}


def chunked_loss() -> dict[str, Any]:
    """Chunked cross-entropy (by weight, and through the head module) against plain cross-entropy."""
    import torch
    import torch.nn.functional as F

    from local_backend.losses import chunked_token_nll, plain_head

    class WrappedHead(torch.nn.Linear):  # a subclass, like a quantised head: must be called as a module
        pass

    generator = torch.Generator().manual_seed(3)
    figures = {}
    for softcap in (None, 3.0):
        hidden = torch.randn(37, 16, generator=generator, requires_grad=True)
        head = WrappedHead(16, 50, bias=True)
        targets = torch.randint(0, 50, (37,), generator=generator)
        logits = F.linear(hidden, head.weight, head.bias)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        want = F.cross_entropy(logits, targets, reduction="none")
        want_grads = torch.autograd.grad(want.sum(), (hidden, head.weight))
        if plain_head(head) is not None:
            raise Mismatch("a Linear subclass was taken for a plain head")
        for how, head_arg, bias in (("weight", head.weight, head.bias), ("module", head, None)):
            got = chunked_token_nll(hidden, head_arg, targets, bias=bias, chunk_tokens=8, softcap=softcap)
            got_grads = torch.autograd.grad(got.sum(), (hidden, head.weight))
            key = f"{how}{'_softcap' if softcap else ''}"
            figures[key] = _close(f"chunked ({key})", got, want, rtol=1e-5, atol=1e-6)
            for a, b in zip(got_grads, want_grads):
                _close(f"chunked grads ({key})", a, b, rtol=1e-5, atol=1e-6)
    return {"max_error": figures}


def grad_accumulation() -> dict[str, Any]:
    """One optimiser step with batch 4 equals one with batch 2 x 2 accumulated (padded and packed)."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="gpucheck-accum-"))
    model = write_model(work / "model", "llama")
    data = write_chats(work / "train.jsonl", 8)
    figures = {}
    for packing in (False, True):
        params = []
        for batch, accum in ((4, 1), (2, 2)):
            trainer = make_trainer(model, data, work / f"out-{packing}-{batch}", batch_size=batch, grad_accum=accum,
                                   packing=packing, max_steps=1, device="cpu", quantize="none", learning_rate=1e-3)
            randomise_lora(trainer.model)
            result = trainer.train(resume=False)
            params.append(({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad},
                           result.train_loss))
        (one, loss_one), (two, loss_two) = params
        if not math.isclose(loss_one, loss_two, rel_tol=1e-5):
            raise Mismatch(f"packing={packing}: loss {loss_one} (batch 4) != {loss_two} (2 x 2 accumulated)")
        error = max(_close(f"packing={packing} {n}", two[n], p, rtol=0, atol=1e-6) for n, p in one.items())
        figures["packed" if packing else "padded"] = {"loss": loss_one, "max_param_error": error}
    return figures


def dpo_first_loss(*, device: str = "cpu") -> dict[str, Any]:
    """DPO's loss before any step is ln 2 (policy == reference: the adapter starts as a no-op),
    with the reference computed live on padded batches and precomputed once on padding-free
    (packed) batches (local_backend/dpo_reference.py); then, with the adapter randomised, the
    two layouts give the same DPO loss and LoRA gradients. On CUDA over a 4-bit base in bf16."""
    work = Path(tempfile.mkdtemp(prefix="gpucheck-dpo-"))
    model = write_model(work / "model", "llama")
    data = write_pairs(work / "pairs.jsonl", 6)
    bf16 = device == "cuda"
    figures: dict[str, Any] = {"ln2": math.log(2)}
    results = {}
    for name, packing, reference in (("live_padded", False, "live"), ("precompute_packed", True, "precompute")):
        trainer = make_trainer(model, data, work / name, method="dpo", device=device, batch_size=3, packing=packing,
                               dpo_reference=reference, quantize="4bit" if bf16 else "none",
                               gradient_checkpointing=bf16)
        trainer.objective.before_training(resumed=False)
        if trainer.objective.reference_mode != reference:
            raise Mismatch(f"{name}: reference {trainer.objective.reference_mode}, asked for {reference}")
        items = trainer._epoch_rows(0)[:3]
        loss, extras = trainer.objective.loss_sum(items, padding_free=trainer.padding_free)
        mean = float(loss.detach()) / len(items)
        # bf16: the precomputed reference came from other batches (other kernels' rounding)
        if not math.isclose(mean, math.log(2), rel_tol=3e-2 if bf16 else 1e-5):
            raise Mismatch(f"{name}: first DPO loss {mean} != ln 2 = {math.log(2)}")
        figures[name] = {"first_loss": mean, "reward_margin": float(extras["reward_margin"])}
        randomise_lora(trainer.model)
        trainer.model.zero_grad(set_to_none=True)
        loss, _ = trainer.objective.loss_sum(items, padding_free=trainer.padding_free)
        (loss / len(items)).backward()
        results[name] = (loss.detach() / len(items), _lora_grads(trainer.model))
    (want_loss, want_grads), (got_loss, got_grads) = results["live_padded"], results["precompute_packed"]
    figures["randomised_loss"] = {"live_padded": float(want_loss), "precompute_packed": float(got_loss)}
    figures["max_loss_error"] = _close("DPO loss, precompute+packed vs live+padded", got_loss, want_loss,
                                       rtol=3e-2 if bf16 else 1e-5, atol=1e-2 if bf16 else 1e-6)
    figures["max_grad_error"] = max(
        _close(f"DPO grad {key}", got_grads[key], grad, rtol=1e-1 if bf16 else 1e-4, atol=1e-3 if bf16 else 1e-6)
        for key, grad in want_grads.items()
    )
    return figures


# ---------------------------------------------------------------- kernels (issue 21 point 8)
def lora_layer(kind: str, fan_in: int, fan_out: int, device: str, dropout: float, *, r: int = 16):  # type: ignore[no-untyped-def]
    """A PEFT LoRA layer as the trainer builds it (fp32 LoRA weights) over a frozen base of
    ``kind``: ``linear`` (fp32 on CPU, bf16 on CUDA), ``linear-bf16`` or ``nf4`` (bitsandbytes
    Linear4bit, NF4 + double quantisation, bf16 compute; quantised where it is moved)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" or kind == "linear-bf16" else torch.float32
    dense = torch.nn.Linear(fan_in, fan_out, bias=False, dtype=dtype)
    if kind == "nf4":
        import bitsandbytes as bnb

        proj = bnb.nn.Linear4bit(fan_in, fan_out, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                                 compress_statistics=True)
        proj.load_state_dict(dense.state_dict())
        proj = proj.to(device)
    else:
        proj = dense.to(device)
    holder = torch.nn.Sequential(proj)
    holder.is_loaded_in_4bit = kind == "nf4"  # PEFT wraps a 4-bit base in its Linear4bit LoRA layer
    model = get_peft_model(holder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=["0"]))
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model, model.base_model.model[0]


def fused_lora_vs_peft(device: str = "cpu") -> dict[str, Any]:
    """The fused LoRA function (local_backend/fused_lora.py) against PEFT's LoRA forward, output
    and dx/dA/dB, over nn.Linear and bitsandbytes NF4 bases (where bitsandbytes imports; its CPU
    backend quantises too), without and with dropout (same mask from the same seed); on CUDA
    under bf16 autocast at Phi-3-mini's MLP size."""
    import importlib.util

    import torch

    from local_backend import fused_lora

    cuda = device == "cuda"
    kinds = ["linear"] + (["linear-bf16"] if not cuda else []) + (["nf4"] if importlib.util.find_spec("bitsandbytes") else [])
    fan_in, fan_out, tokens = (3072, 8192, 1024) if cuda else (96, 160, 16)
    figures: dict[str, Any] = {}
    for kind in kinds:
        for dropout in (0.0, 0.1):
            _, layer = lora_layer(kind, fan_in, fan_out, device, dropout)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else None
            try:
                figures[f"{kind} dropout {dropout}"] = fused_lora.check_layer(layer, autocast, tokens=tokens)
            except AssertionError as exc:
                raise Mismatch(f"fused LoRA vs PEFT ({kind}, dropout {dropout}): {exc}") from exc
    return figures
