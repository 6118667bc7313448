"""One prepared check of the local trainer, for a CPU (CI) or one CUDA machine lent for minutes.

    python -m benchmarks.gpu_check --cpu [--model DIR] [--out DIR]   # CPU checks only (CI runs them with --cpu-bench)
    python -m benchmarks.gpu_check --out DIR [--budget 500]          # CUDA: checks, then the quick benchmark

CPU checks (tiny random models, seconds each): the trainer's padding-free forward and backward
against transformers' own eager forward on each sequence alone, for Phi-3 and Mistral with a
sliding window shorter than the sequences and Gemma-2 with soft-capping (or the model in
``--model``); chunked cross-entropy against plain cross-entropy; gradient accumulation
(batch 4 = 2 x 2); DPO's first loss = ln 2 with a live reference on padded batches and a
precomputed one on packed batches, and the two layouts' DPO loss and LoRA gradients agree.

Both modes also check the fused LoRA function against PEFT's forward (local_backend/fused_lora.py;
on CPU over nn.Linear and bitsandbytes' CPU NF4).

CUDA adds: the fast attention path (which call the functional check chose, numerics forward
and backward); the same packed-vs-reference and DPO checks over a 4-bit base in bf16; bitsandbytes'
settings (NF4, double quantisation, bf16 compute); host synchronisations per training step;
checkpointed layer inputs offloaded to pinned host memory against kept on the GPU (same loss and
gradients, lower peak memory);
FSDP2 on one rank + 4-bit + activation checkpointing against the unsharded model; fused LoRA
on a real NF4 layer (numerics, speed and memory against PEFT) and in the trainer, and Liger's
layer kernels against transformers' on tiny Llama and Phi-3 (packed batches); then the
quick benchmark (benchmarks/_gpu_bench.py) with what time is left.

Every check runs on its own: one that fails is reported and the rest still run. An overall
time budget (``--budget`` seconds) skips what would not fit, so the JSON (``gpu_check.json``)
and Markdown table (``gpu_check.md``) are written before a command limit. Exit status 1 when
any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# Seconds per check on one H200 (2026-12-04 run: the first CUDA model check pays CUDA's start, the next
# ones took 0.2-0.3 s; checks added since: guessed), for --plan; 5 s otherwise.
CHECK_ESTIMATES = {"FlashAttention-3": 3, "fast attention path": 5, "CUDA 4-bit packed vs reference (phi3)": 10,
                   "CUDA 4-bit packed vs reference": 1, "bitsandbytes": 1, "host syncs": 4, "FSDP2": 2,
                   "fused LoRA: speed": 10, "activation offload": 10}


class PlanRunner:
    """Stands in for :class:`Runner` under ``--plan``: records each check with its estimate, runs nothing."""

    def __init__(self, budget: float) -> None:
        self.budget, self.start, self.spent = budget, time.monotonic(), 0.0
        self.default = 5.0
        self.results: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.budget - self.spent

    def run(self, name: str, fn, *args, needs: float = 5.0, **kwargs) -> None:  # type: ignore[no-untyped-def]
        estimate = next((v for k, v in CHECK_ESTIMATES.items() if name.startswith(k)), self.default)
        self.spent += estimate
        self.results.append({"name": name, "status": "planned", "estimate": estimate})


class Runner:
    def __init__(self, budget: float) -> None:
        self.start = time.monotonic()
        self.budget = budget
        self.results: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def run(self, name: str, fn, *args, needs: float = 5.0, **kwargs) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
        if self.left() < needs:
            self.results.append({"name": name, "status": "skipped", "reason": f"{self.left():.0f} s left of the budget"})
            print(f"[skip] {name}: out of time", flush=True)
            return None
        began = time.monotonic()
        print(f"[....] {name}", flush=True)
        try:
            figures = fn(*args, **kwargs)
            entry = {"name": name, "status": "ok", "seconds": round(time.monotonic() - began, 1), "figures": figures}
        except Exception as exc:  # noqa: BLE001 - one failed check must not stop the others
            entry = {"name": name, "status": "FAILED", "seconds": round(time.monotonic() - began, 1),
                     "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            print(entry["traceback"], file=sys.stderr, flush=True)
        self.results.append(entry)
        print(f"[{entry['status'][:4]:4s}] {name} ({entry['seconds']} s)"
              + (f": {entry['error']}" if "error" in entry else f": {_short(entry['figures'])}"), flush=True)
        return entry


def _short(figures: Any) -> str:
    text = json.dumps(figures, default=str)
    return text if len(text) < 400 else text[:400] + "..."


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl", "liger-kernel", "accelerate", "datasets"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {"python": platform.python_version(), "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                           "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda}
            info["gpu"].update(_clocks())
    except Exception as exc:  # noqa: BLE001
        info["gpu_error"] = str(exc)
    return info


def _clocks() -> dict[str, Any]:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"clocks": f"nvidia-smi: {exc}"}
    return {"nvidia_smi": out}


def cpu_checks(runner: Runner, model: str | None) -> None:
    from benchmarks import _checks

    if model:
        runner.run(f"packed vs reference ({Path(model).name})", _checks.packed_vs_reference, "given", model_dir=model)
    else:
        for family in ("phi3", "mistral", "gemma2"):
            runner.run(f"packed vs reference ({family})", _checks.packed_vs_reference, family)
    runner.run("chunked loss vs plain cross-entropy", _checks.chunked_loss)
    runner.run("gradient accumulation 4 = 2 x 2", _checks.grad_accumulation)
    runner.run("DPO first loss = ln 2; precompute+packed = live+padded", _checks.dpo_first_loss)
    runner.run("fused LoRA vs PEFT (CPU: Linear, NF4)", _checks.fused_lora_vs_peft)


def cuda_checks(runner: Runner, model: str | None) -> None:
    from benchmarks import _checks, _cuda_checks

    runner.run("FlashAttention-3: offered by torch? used?", _cuda_checks.flash_attention_3)
    runner.run("fast attention path: choice and numerics", _cuda_checks.fast_attention)
    for family in (("given",) if model else ("phi3", "mistral", "gemma2")):
        runner.run(f"CUDA 4-bit packed vs reference ({family})", _checks.packed_vs_reference, family, device="cuda",
                   model_dir=model)
    runner.run("bitsandbytes: NF4, double quant, bf16 compute", _cuda_checks.bnb_settings)
    runner.run("host syncs per training step", _cuda_checks.host_syncs)
    runner.run("activation offload to host memory vs on the GPU (same NLL/grads, less memory)", _cuda_checks.activation_offload)
    runner.run("CUDA 4-bit DPO: first loss ln 2; precompute+packed = live+padded", _checks.dpo_first_loss,
               device="cuda")
    runner.run("FSDP2 one rank + 4-bit + checkpointing vs unsharded", _cuda_checks.fsdp_one_rank)
    runner.run("fused LoRA vs PEFT on NF4 (bf16 autocast)", _checks.fused_lora_vs_peft, "cuda")
    runner.run("fused LoRA: speed and memory vs PEFT (NF4)", _cuda_checks.fused_lora_speed)
    runner.run("trainer: lora_kernel fused vs peft (4-bit, packed)", _cuda_checks.trainer_kernels, "llama", "lora_kernel")
    for family in ("llama", "phi3"):
        runner.run(f"trainer: layer_kernels liger vs torch ({family}, packed)", _cuda_checks.trainer_kernels, family,
                   "layer_kernels")


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# gpu_check — {report['environment']['date']}", ""]
    env = report["environment"]
    gpu = env.get("gpu") or {}
    lines.append(f"GPU: {gpu.get('name', 'none')} {gpu.get('nvidia_smi', '')}; Python {env['python']}; "
                 + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    lines += ["", "| check | status | seconds | figures / error |", "|---|---|---|---|"]
    for entry in report["checks"]:
        detail = entry.get("error") or entry.get("reason") or _short(entry.get("figures"))
        lines.append(f"| {entry['name']} | {entry['status']} | {entry.get('seconds', '-')} | {detail.replace('|', '/')} |")
    bench = report.get("benchmark")
    if bench:
        from benchmarks import _gpu_bench

        lines += ["", *_gpu_bench.markdown(bench)]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="CPU checks only (hides CUDA)")
    parser.add_argument("--model", help="a local model directory to check instead of the tiny random ones")
    parser.add_argument("--out", default=None, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for everything; reports are written within it")
    parser.add_argument("--no-bench", action="store_true", help="CUDA: the checks only, no benchmark")
    parser.add_argument("--unsloth-site", default=None,
                        help="CUDA: a folder holding Unsloth's own environment (benchmarks/unsloth_env.py), put ahead "
                             "of everything else in the Unsloth recipe's process only")
    parser.add_argument("--recipes", default=None, help="CUDA: comma-separated benchmark recipes (default: all, in "
                        "priority order; benchmarks/_gpu_bench.py)")
    parser.add_argument("--cpu-bench", action="store_true",
                        help="with --cpu: the benchmark's flow on a tiny model on CPU too (its plumbing; figures mean nothing)")
    parser.add_argument("--plan", action="store_true",
                        help="print the checks and recipes with estimated seconds for --budget; run nothing")
    args = parser.parse_args(argv)
    if args.plan:
        return print_plan(args)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    runner = Runner(args.budget)
    report: dict[str, Any] = {"environment": environment(), "mode": "cpu" if args.cpu else "cuda", "checks": runner.results}
    out = Path(args.out) if args.out else None
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    if not args.cpu and not cuda:
        print("no CUDA device: running the CPU checks only (use --cpu to say so)", file=sys.stderr)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if cuda or args.cpu_bench:
        from benchmarks import _gpu_bench

        recipes = _gpu_bench.select(args.recipes)
        # the random model: on the CPU while the CUDA checks use the GPU (tiny on CPU with --cpu-bench)
        build = None if args.no_bench else _gpu_bench.start_build(tiny=not cuda)
        if cuda:
            cuda_checks(runner, args.model)
            if out:
                write_report(out, report)  # the checks are safe on disk before the long part
        if build is not None:
            import gc

            gc.collect()
            if cuda:
                torch.cuda.empty_cache()  # the recipes run in their own processes; leave them the card

            def progress(bench: dict[str, Any]) -> None:  # after each recipe: a command limit loses nothing
                report["benchmark"] = bench
                if out:
                    write_report(out, report)

            report["benchmark"] = _gpu_bench.run(runner, build=build, unsloth_site=args.unsloth_site, recipes=recipes,
                                                 progress=progress)
    cpu_checks(runner, args.model)
    failed = [e["name"] for e in runner.results if e["status"] == "FAILED"]
    report["failed"] = failed
    report["seconds"] = round(time.monotonic() - runner.start, 1)
    if out:
        write_report(out, report)
    print(f"{len(runner.results) - len(failed)} checks passed or skipped, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else "") + f" ({report['seconds']} s)", flush=True)
    return 1 if failed else 0


def preflight() -> str:
    """What this checkout would carry to the GPU machine (benchmarks/README.md), and what is missing."""
    from benchmarks import unsloth_env

    lines, total = [], unsloth_env.tree_bytes()
    for folder, how in ((".whl", "see benchmarks/README.md (pip download ... -d .whl)"),
                        (".unsloth_whl", "python benchmarks/unsloth_env.py download")):
        wheels = sorted((ROOT / folder).glob("*.whl"))
        size = sum(w.stat().st_size for w in wheels)
        total += size
        lines.append(f"  {folder}: {len(wheels)} wheels, {size / 2**20:.1f} MiB" if wheels else f"  {folder}: MISSING ({how})")
    verdict = "fits" if total <= unsloth_env.LIMIT_MIB * 2**20 else "OVER the limit"
    return "\n".join([f"carried from here (carry = [\".whl\", \".unsloth_whl\"]): {total / 2**20:.1f} MiB with the working "
                      f"tree, {verdict} ({unsloth_env.LIMIT_MIB} MiB)", *lines])


def print_plan(args: argparse.Namespace) -> int:
    """The checks and recipes a run with these arguments would start, with estimated seconds."""
    from benchmarks import _gpu_bench

    planner = PlanRunner(args.budget)
    if not args.cpu:
        cuda_checks(planner, args.model)  # type: ignore[arg-type]
        print(f"CUDA checks, ~{planner.spent:.0f} s:")
        for entry in planner.results:
            print(f"  ~{entry['estimate']:3.0f} s  {entry['name']}")
        if not args.no_bench:
            print("\n".join(_gpu_bench.plan(args.budget, planner.spent, args.unsloth_site, _gpu_bench.select(args.recipes))))
            print(preflight())
        planner.results.clear()
        planner.default = 1.0  # about a second each on the H200 (2026-12-04); under the benchmark's 15 s margin
    cpu_checks(planner, args.model)  # type: ignore[arg-type]
    print(f"CPU checks{' (after the benchmark)' if not args.cpu else ''}: " + ", ".join(e["name"] for e in planner.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
