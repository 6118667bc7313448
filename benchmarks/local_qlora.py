"""Our local trainer vs TRL SFTTrainer (+ PEFT + bitsandbytes), side by side and fair, on a
randomly initialised model (no weights can be downloaded).

    python benchmarks/local_qlora.py            # CUDA: Phi-3-mini shape, seq 2048, QLoRA r=16 all linear, batch 8
    python benchmarks/local_qlora.py --tiny     # CPU: a tiny Llama, fp32 LoRA, about a minute (CI smoke)

Fairness rules (the recipes themselves are in benchmarks/_qlora_children.py):
- every recipe trains the same model directory, data, sequence length, LoRA rank and
  targets, masking (answer tokens only), precision, optimiser and per-device batch size;
- each run is its own process that builds (loads) the model itself; this process never
  touches the GPU, so no cached memory of ours sits on the card;
- two data sets: fixed length (every example ~0.9 x seq) and variable length (chat-like,
  log-normal lengths, prompts of 10-50 %), where padding and packing matter;
- warm-up steps are left out; tokens/s = real tokens of the measured steps / their summed
  time, over all rounds; runs are interleaved (ours, TRL, ours, TRL, ...);
- peak memory three ways: ``torch.cuda.max_memory_allocated``, ``max_memory_reserved``
  and the device's own used memory (NVML / cudaMemGetInfo, sampled every 20 ms), the
  maximum over rounds; the memory ratio compares device-level use (what runs out);
- MFU = model FLOPs / (time x the card's dense bf16 peak, looked up by device name):
  4 x matmul parameters per token (forward 2N + activation-gradient backward 2N; the frozen
  weights need no weight gradients; recomputation from checkpointing is not counted) plus
  causal attention, 6 x layers x hidden x n^2 per sequence of n tokens. Only for a
  known card.
Unsloth is a third column where it is installed. ``--tiny`` runs every child on CPU
(CUDA hidden from them), so the smoke is the same on a GPU machine.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "_qlora_children.py"
WORDS = "ahoy matey the ship sails at dawn with gold and rum under a blue sky near the island".split()

# Dense bf16 tensor-core peak, FLOP/s, from each vendor datasheet (read 2026-11-25). Matched on
# the name torch reports, most specific first.
PEAK_BF16 = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
    ("RTX 4090", 165e12),
]


def card_peak(name: str | None) -> float | None:
    for fragment, flops in PEAK_BF16:
        if name and fragment in name:
            return flops
    return None


def write_dataset(path: Path, tokenizer_dir: Path, seq_len: int, count: int, *, variable: bool) -> list[int]:
    """Single-turn chats; returns each example's approximate token count."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    words_per_token = len(WORDS) / len(tokenizer(" ".join(WORDS))["input_ids"])
    rng = random.Random(0)
    lengths = []
    with open(path, "w") as handle:
        for _ in range(count):
            if variable:  # median ~seq/5, long tail, clipped to the window
                total = int(min(0.9 * seq_len, max(32, rng.lognormvariate(math.log(seq_len / 5), 0.8))))
                prompt = int(total * rng.uniform(0.1, 0.5))
            else:
                total, prompt = int(0.9 * seq_len), 16
            say = lambda n: " ".join(rng.choice(WORDS) for _ in range(max(1, int(n * words_per_token))))  # noqa: E731
            messages = [{"role": "user", "content": say(prompt)}, {"role": "assistant", "content": say(total - prompt)}]
            handle.write(json.dumps({"messages": messages}) + "\n")
            lengths.append(total)
    return lengths


def real_lengths(model_dir: str, data: Path) -> list[int]:
    """Tokenized length of every example, as the chat template renders it (MFU counts these)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line)["messages"] for line in data.read_text().splitlines() if line.strip()]
    texts = [tokenizer.apply_chat_template(messages, tokenize=False) for messages in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# column -> (child recipe, extra settings)
RECIPES = {
    "ours": ("ours", {}),
    "ours_no_packing": ("ours", {"packing": False}),  # the packing ablation
    "trl": ("trl", {}),  # TRL SFTTrainer + PEFT, padded
    "trl_fast": ("trl_fast", {}),  # TRL's fast configuration: BFD packing, padding-free, Liger: the reference
    "unsloth": ("unsloth", {}),
}


def missing_reason(name: str) -> str | None:
    """Why a column cannot run here (None: it can)."""
    if name.startswith("trl") and not (importlib.util.find_spec("trl") and importlib.util.find_spec("datasets")):
        return "trl is not installed: pip install 'cloudtune[bench]' (or carry the wheels, benchmarks/README.md)"
    if name == "trl_fast" and not importlib.util.find_spec("liger_kernel"):
        return None  # runs without Liger; the table says so in its loss column
    if name == "unsloth" and not importlib.util.find_spec("unsloth"):
        return ("unsloth is not installed; its release needs trl<=1.15 and transformers<=5.17, which this project's "
                "trl>=1.16 excludes: install it in an environment of its own and run this script there")
    return None


def environment() -> dict[str, Any]:
    """Library versions and the card's clocks (nvidia-smi), without touching the GPU from this process."""
    import importlib.metadata as md
    import platform

    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_check import _clocks

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl", "liger-kernel", "accelerate", "unsloth"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "versions": versions, **_clocks()}


def child(recipe: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    if settings["tiny"]:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --tiny means CPU, in every child, on any machine
    result = subprocess.run([sys.executable, str(CHILD), recipe, json.dumps(settings)],
                            capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        sys.stderr.write(f"{recipe} failed:\n{result.stderr[-4000:]}\n")
        return None
    return json.loads(lines[-1][len("RESULT "):])


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one recipe: summed tokens over summed time; memory peaks are maxima."""
    tokens = sum(r["measured_tokens"] for r in runs)
    seconds = sum(r["measured_seconds"] for r in runs)
    out = {**runs[-1], "tokens_per_s": tokens / seconds, "measured_tokens": tokens, "measured_seconds": seconds,
           "rounds": len(runs), "tokens_per_s_each": [r["tokens_per_s"] for r in runs]}
    for key in ("max_allocated_gib", "max_reserved_gib", "device_used_gib"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = max(values) if values else None
    return out


def mfu(result: dict[str, Any], model: dict[str, Any], lengths: list[int], peak: float | None) -> float | None:
    if peak is None:
        return None
    mean_sq = sum(n * n for n in lengths) / len(lengths)
    mean_len = sum(lengths) / len(lengths)
    flops_per_token = 4 * model["matmul_params"] + 6 * model["layers"] * model["hidden"] * mean_sq / mean_len
    return flops_per_token * result["tokens_per_s"] / peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model, every child on CPU")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run, warm-up included")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the throughput (2 with --tiny, else 3)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs per recipe and data set")
    parser.add_argument("--quantize", choices=["4bit", "none"], default="4bit", help="CUDA: QLoRA (4bit) or bf16 LoRA")
    parser.add_argument("--data", choices=["fixed", "variable", "both"], default="both")
    parser.add_argument("--arch", choices=["llama", "phi3"], default="llama",
                        help="CUDA model: Phi-3-mini's dimensions as a Llama config (default: every fast path, "
                             "Unsloth's included, covers it) or as Phi-3 (fused projections)")
    parser.add_argument("--recipes", default=None,
                        help="comma-separated columns of " + ",".join(RECIPES) + " (default: all; --tiny: ours,trl)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tiny = args.tiny
    seq_len = args.seq_len or (128 if tiny else 2048)
    warmup = args.warmup if args.warmup is not None else (2 if tiny else 3)
    steps = args.steps or (6 if tiny else warmup + 30)  # >= 30 measured steps on a GPU
    batch = args.batch_size or (2 if tiny else 8)
    log_every = 1 if tiny else 3  # ours reads the GPU once per log line; TRL's clock syncs every step
    if not tiny and warmup % log_every:
        parser.error(f"--warmup must be a multiple of {log_every} (ours is timed per log line)")
    work = Path(tempfile.mkdtemp(prefix="bench-qlora-"))
    atexit.register(shutil.rmtree, work, True)  # the model and the datasets are this run's only
    base = {"tiny": tiny, "seq_len": seq_len, "steps": steps, "batch_size": batch, "warmup": warmup,
            "quantize": args.quantize, "model": str(work / "model"), "words": WORDS, "arch": args.arch,
            "log_every": log_every}
    wanted = (args.recipes or ("ours,trl" if tiny else ",".join(RECIPES))).split(",")
    unknown = [name for name in wanted if name not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}: choose from {', '.join(RECIPES)}")
    missing = {name: why for name in wanted if (why := missing_reason(name))}
    for name, why in missing.items():
        print(f"column {name} missing: {why}", file=sys.stderr)
    recipes = [name for name in wanted if name not in missing]
    model = child("build", base)
    if model is None:
        return 1
    shape = "tiny llama (random)" if tiny else (
        "Llama config with Phi-3-mini's dimensions (random, 3.8B)" if args.arch == "llama" else "phi-3-mini (random, 3.8B)")
    report: dict[str, Any] = {
        "model": shape, "seq_len": seq_len,
        "batch_size": batch, "steps": steps, "warmup_steps": warmup, "rounds": args.rounds,
        "lora": "r=16 alpha=32 all linear, dropout 0", "quantize": "none (CPU fp32)" if tiny else args.quantize,
        "matmul_params": model["matmul_params"], "date": time.strftime("%Y-%m-%d"), "datasets": {},
        "missing": missing, "environment": environment(),
    }
    kinds = ["fixed", "variable"] if args.data == "both" else [args.data]
    for kind in kinds:
        data = work / f"{kind}.jsonl"
        # Enough examples for every step even when packing fills rows with several of them.
        count = steps * batch * (8 if kind == "variable" else 1) + batch
        write_dataset(data, Path(base["model"]), seq_len, count, variable=kind == "variable")
        lengths = real_lengths(base["model"], data)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in recipes}
        for _ in range(args.rounds):
            for name in recipes:  # interleaved: ours, trl, ours, trl
                recipe, extra = RECIPES[name]
                result = child(recipe, {**base, **extra, "data": str(data)})
                if result is not None:
                    runs[name].append(result)
        results = {name: combine(r) for name, r in runs.items() if r}
        device_name = next((r.get("device_name") for r in results.values() if r.get("device_name")), None)
        report["device"] = device_name or "cpu"
        for result in results.values():
            result["mfu"] = mfu(result, model, lengths, card_peak(device_name))
        entry: dict[str, Any] = {"results": results, "mean_example_tokens": sum(lengths) / len(lengths)}
        reference = "trl_fast" if "trl_fast" in results else "trl"
        ours, ref = results.get("ours"), results.get(reference)
        entry["reference"] = reference
        if ours and ref:
            entry["speedup"] = ours["tokens_per_s"] / ref["tokens_per_s"]
            for key in ("device_used_gib", "max_allocated_gib", "max_reserved_gib"):
                if ours.get(key) and ref.get(key):
                    entry[f"memory_ratio_{key.removesuffix('_gib')}"] = ours[key] / ref[key]
        report["datasets"][kind] = entry
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0 if all(e["results"].get("ours") for e in report["datasets"].values()) else 1


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['model']} on {report['device']}, seq {report['seq_len']}, batch {report['batch_size']}, "
          f"{report['lora']}, {report['quantize']}; {report['steps']} steps ({report['warmup_steps']} warm-up) "
          f"x {report['rounds']} rounds")
    for kind, entry in report["datasets"].items():
        print(f"\n{kind} length (mean {entry['mean_example_tokens']:.0f} tokens/example)")
        print("  recipe           tokens/s   alloc GiB  reserved GiB  device GiB   MFU    layout   (CPU: device = peak RSS)")
        for name, r in entry["results"].items():
            mfu_text = "-" if r.get("mfu") is None else f"{r['mfu']:.1%}"
            print(f"  {name:15s} {r['tokens_per_s']:10.1f}  {_gib(r['max_allocated_gib']):>9s}  "
                  f"{_gib(r['max_reserved_gib']):>12s}  {_gib(r['device_used_gib']):>10s}  {mfu_text:>6s}  {r['layout']}, loss {r.get('loss')}")
        if "speedup" in entry:
            memory = entry.get("memory_ratio_device_used")
            print(f"  ours/{entry['reference']}: {entry['speedup']:.2f}x tokens/s at "
                  f"{'-' if memory is None else f'{memory:.2f}x'} device memory (goal: >= 1.5x TRL's fast "
                  "configuration at <= 0.8x its memory, and >= 1.0x Unsloth)")
    for name, why in report.get("missing", {}).items():
        print(f"\ncolumn {name} missing: {why}")
    env = report.get("environment") or {}
    print(f"\n{env.get('nvidia_smi', '')} Python {env.get('python')}; "
          + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v))


if __name__ == "__main__":
    sys.exit(main())
