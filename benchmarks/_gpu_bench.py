"""The quick benchmark of benchmarks/gpu_check.py: fits a few minutes of one H100/H200 with
nothing downloaded.

A random model with Phi-3-mini's dimensions as a Llama config (3.8B; every fast path covers
Llama's separate projections), variable-length chat data made on the spot (log-normal
lengths, median ~seq/5), sequence 2048, QLoRA (NF4 + double quant, bf16 compute), LoRA r=16
alpha=32 on all linear layers, fused AdamW, activation checkpointing, per-device batch 8.
Recipes, each in its own process (benchmarks/_qlora_children.py), in this order:

- ``ours``: local_backend.trainer as it ships on CUDA (packed, padding-free, varlen attention,
  chunked loss), logging every 3 steps;
- ``trl_fast``: TRL SFTTrainer + PEFT in TRL's fast configuration (BFD packing, padding-free,
  Liger kernels and loss where installed): the reference column;
- ``ours_no_packing``: ours with padded (length-grouped) batches, the packing ablation;
- ``ours_liger_loss``: ours with Liger's fused loss instead of our chunked one (where time is left).

Every recipe runs with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (less
fragmentation for everyone alike).

Tokens/s = real tokens of the measured steps (after warm-up) / their time; MFU counts model
FLOPs from the real tokenized lengths (benchmarks/local_qlora.py, ``mfu``) against the card's
dense bf16 peak. Each recipe gets a time limit from the overall budget; a recipe that does not
fit is reported as skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import local_qlora

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "_qlora_children.py"
RECIPES = (("ours", {}), ("trl_fast", {}), ("ours_no_packing", {"packing": False}),
           ("ours_liger_loss", {"loss_impl": "liger"}))


def _child(recipe: str, settings: dict[str, Any], timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
           "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    began = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(CHILD), recipe, json.dumps(settings)],
                                capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:] if isinstance(exc.stderr, bytes) else (exc.stderr or "")[-1500:]
        return None, f"timed out after {timeout:.0f} s: {tail!s}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        return None, f"exit {result.returncode}: {result.stderr[-2500:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_seconds"] = round(time.monotonic() - began, 1)
    return out, None


def run(runner: Any, *, seq_len: int = 2048, batch: int = 8, warmup: int = 3, measured: int = 30) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    steps = warmup + measured
    base = {"tiny": False, "seq_len": seq_len, "steps": steps, "batch_size": batch, "warmup": warmup, "quantize": "4bit",
            "model": str(work / "model"), "words": local_qlora.WORDS, "arch": "llama", "log_every": 3}
    report: dict[str, Any] = {"model": "Llama config with Phi-3-mini's dimensions (random, 3.8B)", "seq_len": seq_len,
                              "batch_size": batch, "warmup_steps": warmup, "measured_steps": measured,
                              "lora": "r=16 alpha=32 all linear, dropout 0", "quantize": "NF4 + double quant, bf16 compute",
                              "data": "variable length (log-normal, median ~seq/5, prompts 10-50%)", "results": {},
                              "missing": {}}
    if not importlib.util.find_spec("trl"):
        report["missing"]["trl_fast"] = "trl is not installed (carry the wheels: benchmarks/README.md)"
    if not importlib.util.find_spec("liger_kernel"):
        report["missing"]["liger"] = "liger-kernel is not installed: TRL runs without Liger, ours with the chunked loss"
    if not importlib.util.find_spec("unsloth"):
        report["missing"]["unsloth"] = ("not installed; its release needs trl<=1.15 / transformers<=5.17: run it in its "
                                        "own environment (benchmarks/README.md)")
    began = time.monotonic()
    model, error = _child("build", base, max(30.0, runner.left() - 30))
    report["build_seconds"] = round(time.monotonic() - began, 1)
    if model is None:
        report["error"] = f"building the model: {error}"
        return report
    data = work / "variable.jsonl"
    local_qlora.write_dataset(data, Path(base["model"]), seq_len, steps * batch * 8 + batch, variable=True)
    lengths = local_qlora.real_lengths(base["model"], data)
    report["mean_example_tokens"] = sum(lengths) / len(lengths)
    report["matmul_params"] = model["matmul_params"]
    for name, extra in RECIPES:
        recipe = "ours" if name.startswith("ours") else name
        if name in report["missing"]:
            continue
        left = runner.left() - 15
        if left < 60:
            report["missing"][name] = f"skipped: {runner.left():.0f} s left of the budget"
            continue
        print(f"[bench] {name} (limit {left:.0f} s)", flush=True)
        result, error = _child(recipe, {**base, **extra, "data": str(data)}, left)
        if result is None and name == "trl_fast" and runner.left() > 120:
            print(f"[bench] {name} failed: {error[-800:]}; again without Liger", flush=True)
            report["missing"]["trl_fast (with Liger)"] = error
            result, error = _child(recipe, {**base, **extra, "data": str(data), "liger": False}, runner.left() - 15)
        if result is None:
            report["missing"][name] = error
            print(f"[bench] {name} failed: {error[-800:]}", flush=True)
            continue
        peak = local_qlora.card_peak(result.get("device_name"))
        result["mfu"] = local_qlora.mfu(result, model, lengths, peak)
        report["device"] = result.get("device_name")
        report["results"][name] = result
        print(f"[bench] {name}: {result['tokens_per_s']:.0f} tokens/s, {result.get('device_used_gib') or 0:.1f} GiB, "
              f"MFU {result['mfu'] or 0:.1%}, {result['measured_steps']} measured steps, {result['wall_seconds']} s", flush=True)
    ours, ref = report["results"].get("ours"), report["results"].get("trl_fast")
    if ours and ref:
        report["speedup_vs_trl_fast"] = ours["tokens_per_s"] / ref["tokens_per_s"]
        if ours.get("device_used_gib") and ref.get("device_used_gib"):
            report["memory_ratio_vs_trl_fast"] = ours["device_used_gib"] / ref["device_used_gib"]
    return report


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> list[str]:
    lines = [f"## Quick benchmark: {report['model']} on {report.get('device', '?')}",
             f"seq {report['seq_len']}, batch {report['batch_size']}, {report['lora']}, {report['quantize']}, "
             f"{report['data']} (mean {_num(report.get('mean_example_tokens'), '.0f')} tokens/example); "
             f"{report['warmup_steps']} warm-up + {report['measured_steps']} measured steps per recipe", "",
             "| recipe | layout | loss | tokens/s | vs TRL fast | alloc GiB | reserved GiB | device GiB | MFU | measured steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ref = report["results"].get("trl_fast")
    for name, r in report["results"].items():
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        lines.append(f"| {name} | {r.get('layout')} | {r.get('loss')} | {r['tokens_per_s']:.0f} | {ratio} | "
                     f"{_num(r.get('max_allocated_gib'), '.2f')} | {_num(r.get('max_reserved_gib'), '.2f')} | "
                     f"{_num(r.get('device_used_gib'), '.2f')} | {_num(r.get('mfu'), '.1%')} | {r.get('measured_steps')} |")
    for name, why in report.get("missing", {}).items():
        lines.append(f"\n- {name} missing: {str(why)[-300:]}")
    if report.get("error"):
        lines.append(f"\n- error: {report['error'][-500:]}")
    return lines
