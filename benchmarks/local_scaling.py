"""Scaling of local training with the number of processes (``-o num_processes=N``, torchrun).

    python benchmarks/local_scaling.py                  # 1..(GPUs, or CPU cores) processes
    python benchmarks/local_scaling.py --processes 1 2  # chosen counts
    python benchmarks/local_scaling.py --model DIR      # a real model instead of the random one
    python benchmarks/local_scaling.py --fsdp           # N > 1 processes also shard the base (-o fsdp=true)

Each count trains the same job through the local provider (the code path users run): the same
model, data, global batch (``--batch-size`` rows per optimiser step, split across processes),
steps and seed. tokens/s = tokens of the measured steps / the time between their metric events
(rank 0 reports them after the gradient all-reduce, so it is the whole job's rate); the first
``--warmup`` steps are left out, and start-up (imports, model load, rendezvous) is not counted.
Efficiency = tokens/s(N) / (N x tokens/s(1)): 100% is linear scaling.

On CUDA each process takes one GPU (nccl). On CPU each process runs ``--threads`` torch threads
(gloo), so N processes use N x threads cores: the comparison is between equal per-process
resources, and N may not exceed the cores there are without measuring contention instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _devices() -> tuple[str, int]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.device_count()
    return "cpu", os.cpu_count() or 1


def _training_file(path: Path, examples: int) -> Path:
    rows = []
    for i in range(examples):
        question = f"Question number {i}? Please answer with the pirate phrase and a number: " + " ".join(str(i * k % 97) for k in range(12))
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": f"Ahoy matey! The answer is {i}. Arr."}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _measure(model: str, train: Path, processes: int, args: argparse.Namespace, home: Path) -> dict:
    from cloudtune import poller
    from cloudtune.types import FineTuneSpec, Hyperparameters, JobState
    from providers.local import LocalProvider

    os.environ["CLOUDTUNE_HOME"] = str(home / f"n{processes}")
    options = {"torch_threads": str(args.threads)}
    if processes > 1:
        options["num_processes"] = str(processes)
        if args.fsdp:
            options["fsdp"] = "true"  # one process has nothing to shard with: it stays the plain baseline
    provider = LocalProvider(options)
    spec = FineTuneSpec(
        provider="local", base_model=model, training_file=train, seed=1,
        hyperparameters=Hyperparameters(epochs=1, batch_size=args.batch_size, extra={
            "max_steps": args.steps, "checkpoint_every": 0, "max_seq_len": args.seq_len, "lora_r": 16, "lora_alpha": 32,
        }),
    )
    started = time.perf_counter()
    job = provider.create_job(spec, training_file_id=provider.upload_file(train), validation_file_id=None, run_id=f"scaling-{processes}")
    final = poller.wait_for_job(provider, job.id, timeout_s=args.timeout, sleep=time.sleep, clock=time.monotonic)
    wall = time.perf_counter() - started
    if final.state != JobState.SUCCEEDED:
        log = (provider._jobdir(job.id).path / "worker.log").read_text()[-3000:]
        raise SystemExit(f"{processes} processes: job {final.state}: {final.error}\n{log}")
    steps = [e for e in provider.list_events(job.id, limit=100_000) if e.data.get("kind") == "metrics" and "grad_norm" in e.data]
    measured = steps[args.warmup :]
    if len(measured) < 2:
        raise SystemExit(f"too few steps to measure ({len(steps)}); raise --steps")
    first, last = measured[0], measured[-1]
    seconds = (last.created_at - first.created_at).total_seconds()
    tokens = last.data["trained_tokens"] - first.data["trained_tokens"]
    provider.close()
    return {"processes": processes, "steps": len(measured) - 1, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0, "wall_s": wall, "final_loss": final.metrics.get("train_loss")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", help="process counts (default 1..devices)")
    parser.add_argument("--model", help="model directory (default: a random Llama built here)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random model")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="global rows per optimiser step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--fsdp", action="store_true", help="shard the frozen base across the processes (FSDP2) when N > 1")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    device, available = _devices()
    counts = args.processes or list(range(1, max(1, available // (args.threads if device == "cpu" else 1)) + 1))
    if counts[0] != 1:
        counts = [1, *counts]  # efficiency is measured against one process
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory(prefix="ct-scaling-") as tmp:
        work = Path(tmp)
        train = _training_file(work / "train.jsonl", args.examples)
        model = args.model
        if model is None:
            from local_backend.tiny import build_tiny_model

            texts = train.read_text().splitlines()  # its tokenizer is trained on the data, as a real one fits its language
            model = str(build_tiny_model(work / "model", texts, hidden_size=args.hidden, intermediate_size=args.hidden * 3, layers=args.layers))
        results = [_measure(model, train, n, args, work / "home") for n in counts]
    base = results[0]["tokens_per_s"]
    for row in results:
        row["speedup"] = row["tokens_per_s"] / base if base else 0.0
        row["efficiency"] = row["speedup"] / row["processes"]
    report = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "device": device, "devices_available": available,
              "model": args.model or f"random Llama hidden {args.hidden} x {args.layers} layers", "global_batch": args.batch_size,
              "seq_len": args.seq_len, "fsdp": args.fsdp, "threads_per_process": args.threads if device == "cpu" else None,
              "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{device}, {available} available; {report['model']}{' (FSDP when N > 1)' if args.fsdp else ''}; global batch {args.batch_size}, seq {args.seq_len}; "
          f"load average {report['load_average']:.1f}")
    print(f"{'processes':>9} {'tokens/s':>10} {'speedup':>8} {'efficiency':>10} {'wall s':>7}")
    for row in results:
        print(f"{row['processes']:>9} {row['tokens_per_s']:>10,.0f} {row['speedup']:>7.2f}x {row['efficiency']:>9.0%} {row['wall_s']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
