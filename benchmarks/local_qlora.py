"""Our local trainer vs the reference recipe (TRL SFTTrainer + PEFT + bitsandbytes) with
identical settings, on a randomly initialised model (no weights can be downloaded).

    python benchmarks/local_qlora.py            # CUDA: Phi-3-mini shape, seq 2048, QLoRA r=16 all linear
    python benchmarks/local_qlora.py --tiny     # CPU: a tiny Llama, plain LoRA, seconds (keeps this from rotting)

Each recipe runs in its own subprocess so peak memory is its own. Reported: tokens/s
(after warm-up steps), peak memory (GPU: max allocated; CPU: max RSS), and MFU with the
LoRA estimate of ~4N FLOP per token (forward 2N + activation-gradient backward 2N; the
frozen weights need no weight gradients), against 989 TFLOP/s dense bf16 on an H100.
The reference needs `pip install trl==1.16.0`; without it only our trainer is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
H100_BF16_FLOPS = 989e12
WORDS = "ahoy matey the ship sails at dawn with gold and rum under a blue sky near the island".split()


def build_model(out: Path, tiny: bool) -> Path:
    """A randomly initialised model saved to ``out`` (Phi-3-mini shape, or a tiny Llama)."""
    import torch

    if tiny:
        from local_backend.tiny import build_tiny_model

        return build_tiny_model(out, [" ".join(WORDS)], hidden_size=128, intermediate_size=256, layers=2)
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    from local_backend.tiny import build_tokenizer

    config = Phi3Config(  # microsoft/Phi-3-mini-4k-instruct's shape: 3.8B parameters
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Phi3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer = build_tokenizer([" ".join(WORDS)])
    tokenizer.save_pretrained(out)
    del model
    AutoTokenizer.from_pretrained(out)  # sanity: loadable
    return out


def write_dataset(path: Path, tokenizer_dir: Path, seq_len: int, count: int) -> None:
    """Chat examples of about ``seq_len`` tokens each (answers long, so most tokens train)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(0)
    words_per_token = len(WORDS) / len(tokenizer(" ".join(WORDS))["input_ids"])
    n_words = int(seq_len * words_per_token * 0.9)
    with open(path, "w") as handle:
        for _ in range(count):
            answer = " ".join(rng.choice(WORDS) for _ in range(n_words))
            handle.write(json.dumps({"messages": [{"role": "user", "content": "Tell me a tale."}, {"role": "assistant", "content": answer}]}) + "\n")


def _peak_memory() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _count_params(model) -> int:  # type: ignore[no-untyped-def]
    # Quantised weights are packed (two 4-bit values per byte), so count the logical shapes.
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or any(True for _ in module.children()):
            continue
        shape = getattr(weight, "quant_state", None)
        total += int(shape.shape.numel()) if shape is not None else weight.numel()
    return total


def run_ours(args: argparse.Namespace) -> dict:
    from local_backend.trainer import Trainer, TrainConfig

    rates: list[float] = []

    def on_event(level: str, message: str, data: dict) -> None:
        if "tokens_per_s" in data:
            rates.append(data["tokens_per_s"])

    config = TrainConfig(
        base_model=args.model, train_file=args.data, epochs=1, batch_size=args.batch_size, grad_accum=1,
        learning_rate=2e-4, warmup_ratio=0.0, max_seq_len=args.seq_len, lora_r=16, lora_alpha=32,
        lora_dropout=0.0, target_modules="all-linear", checkpoint_every=0, log_every=1,
        max_steps=args.steps, seed=0,
    )
    out = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    trainer = Trainer(config, out, on_event=on_event)
    trainer.setup()
    params = _count_params(trainer.model.get_base_model())
    trainer.train(resume=False)
    measured = rates[args.warmup :] or rates
    return {"tokens_per_s": sum(measured) / len(measured), "peak_memory_gib": _peak_memory(), "params": params,
            "device": trainer.device, "quantized_4bit": trainer.use_4bit}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    params = _count_params(model)
    dataset = load_dataset("json", data_files=args.data, split="train")
    times: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter(), 0))

    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0,
        max_steps=args.steps, max_length=args.seq_len, logging_steps=1, save_strategy="no", report_to=[],
        bf16=cuda, gradient_checkpointing=cuda, optim="paged_adamw_8bit" if cuda else "adamw_torch",
        assistant_only_loss=False, completion_only_loss=None, packing=False, seed=0, use_cpu=not cuda,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Clock()])
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    start = time.perf_counter()
    trainer.train()
    stamps = [start] + [t for t, _ in times]
    per_step = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup :]
    tokens_per_step = args.batch_size * (sum(lengths) / len(lengths))
    return {"tokens_per_s": tokens_per_step / (sum(per_step) / len(per_step)), "peak_memory_gib": _peak_memory(),
            "params": params, "device": "cuda" if cuda else "cpu", "quantized_4bit": cuda}


def _child(recipe: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--_recipe", recipe, "--_model", args.model, "--_data", args.data,
               "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--warmup", str(args.warmup)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        sys.stderr.write(f"{recipe} failed:\n{result.stderr[-3000:]}\n")
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (seconds)")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the throughput")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--_recipe", help=argparse.SUPPRESS)
    parser.add_argument("--_model", help=argparse.SUPPRESS)
    parser.add_argument("--_data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._recipe:
        args.model, args.data = args._model, args._data
        result = run_ours(args) if args._recipe == "ours" else run_trl(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    import importlib.util

    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    args.seq_len = args.seq_len or (2048 if cuda else 128)
    args.steps = args.steps or (12 if cuda else 8)
    args.batch_size = args.batch_size or (1 if cuda else 2)
    work = Path(tempfile.mkdtemp(prefix="bench-qlora-"))
    args.model = str(build_model(work / "model", tiny=not cuda))
    args.data = str(work / "train.jsonl")
    write_dataset(Path(args.data), Path(args.model), args.seq_len, count=args.steps * args.batch_size + 4)
    results = {"ours": _child("ours", args)}
    if importlib.util.find_spec("trl") and importlib.util.find_spec("datasets"):
        results["trl"] = _child("trl", args)
    else:
        print("reference recipe skipped: pip install trl==1.16.0", file=sys.stderr)
    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "model": "phi-3-mini-shape (random)" if cuda else "tiny llama (random)",
              "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps, "lora": "r=16 all-linear",
              "results": results, "date": time.strftime("%Y-%m-%d")}
    for name, result in results.items():
        if result:
            result["mfu"] = 4 * result["params"] * result["tokens_per_s"] / H100_BF16_FLOPS if cuda else None
    ours, ref = results.get("ours"), results.get("trl")
    if ours and ref:
        report["speedup"] = ours["tokens_per_s"] / ref["tokens_per_s"]
        report["memory_ratio"] = ours["peak_memory_gib"] / ref["peak_memory_gib"]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['model']} on {report['device']}, seq {args.seq_len}, batch {args.batch_size}, LoRA r=16 all linear")
        for name, result in results.items():
            if not result:
                print(f"  {name:5s} failed")
                continue
            mfu = f", MFU {result['mfu']:.1%}" if result.get("mfu") is not None else " (MFU: H100 figure only)"
            print(f"  {name:5s} {result['tokens_per_s']:10.1f} tokens/s, peak {result['peak_memory_gib']:.2f} GiB{mfu}")
        if "speedup" in report:
            print(f"  ours/trl: {report['speedup']:.2f}x tokens/s at {report['memory_ratio']:.2f}x peak memory "
                  "(goal >= 1.5x at <= 0.8x on an H100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
