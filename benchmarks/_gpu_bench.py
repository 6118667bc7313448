"""The quick benchmark of benchmarks/gpu_check.py: fits a few minutes of one H100/H200 with
nothing downloaded.

A random model with Phi-3-mini's dimensions as a Llama config (3.8B; every fast path covers
Llama's separate projections), chat data made on the spot, sequence 2048, QLoRA (NF4 + double
quant, bf16 compute), LoRA r=16 alpha=32 on all linear layers, fused AdamW, activation
checkpointing, per-device batch 8, 3 warm-up + 30 measured steps per recipe. Every recipe runs in
its own process (benchmarks/_qlora_children.py) with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``
(less fragmentation for everyone alike).

Recipes, in priority order (``--budget`` cuts from the end; :data:`RECIPES`):

1. ``trl_fast``: TRL SFTTrainer + PEFT in TRL's fast configuration (BFD packing, padding-free,
   Liger kernels and loss where installed): the reference column;
2. ``ours``: local_backend.trainer with its CUDA defaults (packed, padding-free, varlen
   attention, chunked loss, ``lora_kernel``/``layer_kernels``/``activation_offload`` on auto);
3. ``unsloth``: Unsloth 2026.10.9 in an environment of its own (benchmarks/unsloth_env.py;
   ``--unsloth-site``), under the same TRL fast configuration minus Liger;
4. ``ours_previous``: ours with ``lora_kernel=peft layer_kernels=torch activation_offload=none``
   (the path shipped before issue 21's point 8), the ablation of the new kernels;
5. ``ours_no_packing``: ours with padded (length-grouped) batches, the packing ablation;
6. then fixed-length data (every example ~0.9 x seq) for ``ours`` and ``trl_fast`` if time is left.

A recipe whose option this checkout's trainer lacks is reported as "option not available"; a
recipe that fails, or is cut by the budget, is reported with the reason and the rest still run.

Tokens/s = real tokens of the measured steps (after warm-up) / their time; MFU counts model
FLOPs from the real tokenized lengths (benchmarks/local_qlora.py, ``mfu``) against the card's
dense bf16 peak.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import local_qlora

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "_qlora_children.py"


@dataclass(frozen=True)
class Recipe:
    name: str
    child: str  # the recipe of benchmarks/_qlora_children.py
    label: str
    estimate: float  # seconds for the whole child process on an H200 (see ESTIMATES_SOURCE)
    settings: dict[str, Any] = field(default_factory=dict)  # packing / loss_impl / liger
    options: dict[str, Any] = field(default_factory=dict)  # TrainConfig options (ours only)
    optional: tuple[str, ...] = ()  # options whose absence from the trainer means the value asked for
    data: str = "variable"
    environment: str = "main"  # "unsloth": its own site folder ahead of everything else

    def describe(self) -> str:
        extra = {**self.settings, **self.options}
        return self.label + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


PREVIOUS_PATH = {"lora_kernel": "peft", "layer_kernels": "torch", "activation_offload": "none"}
# Whole-process seconds measured by gpu_check on one H200 on 2026-12-04 (results/gpu_check-2026-12-04-h200.json:
# trl_fast 160.5, ours 55.4, ours_no_packing 61.4); Unsloth never ran here: guessed as its import and
# patching (~30 s), TRL's load, quantisation and data preparation (~50 s) and 33 steps on torch's
# varlen flash kernel as ours uses (unsloth/utils/attention_dispatch.py), at ~1.5 s each.
ESTIMATES_SOURCE = "gpu_check on one H200, 2026-12-04 (Unsloth: a guess, never measured here)"
RECIPES: tuple[Recipe, ...] = (
    Recipe("trl_fast", "trl_fast", "TRL SFTTrainer fast config (reference): BFD packing, padding-free, Liger", 165),
    Recipe("ours", "ours", "ours, CUDA defaults", 60),
    Recipe("unsloth", "unsloth", "Unsloth (own environment), TRL fast config without Liger", 140, environment="unsloth"),
    Recipe("ours_previous", "ours", "ours, previous path", 60, options=PREVIOUS_PATH, optional=tuple(PREVIOUS_PATH)),
    Recipe("ours_no_packing", "ours", "ours without packing (padded, length-grouped)", 65, settings={"packing": False}),
    Recipe("ours_fixed", "ours", "ours, CUDA defaults", 60, data="fixed"),
    Recipe("trl_fast_fixed", "trl_fast", "TRL fast config (reference)", 165, data="fixed"),
)
# The random 3.8B model is written on the CPU while the CUDA checks run (20.6 s on the GPU on 2026-12-04;
# more on the CPU, hidden behind the checks); what remains after them: the data and its tokenized lengths.
BUILD_ESTIMATE = 15.0
MIN_FRACTION = 0.6  # a recipe starts only with at least this share of its estimate left


def _child_env(recipe: Recipe, unsloth_site: str | None) -> dict[str, str]:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    if recipe.environment == "unsloth" and unsloth_site:
        paths.insert(0, unsloth_site)  # its trl 1.15 / datasets 4.8 shadow the carried trl 1.16 / datasets 5.2
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    if recipe.environment == "unsloth":
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "HF_HUB_DISABLE_TELEMETRY": "1"})
    return env


def child(recipe: str, settings: dict[str, Any], timeout: float, env: dict[str, str] | None = None,
          cwd: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Run one child; (result, None) or (None, why not)."""
    env = env or _child_env(Recipe(recipe, recipe, recipe, 0), None)
    began = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(CHILD), recipe, json.dumps(settings)],
                                capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        done = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        if done:  # it finished and printed its figures, then did not exit in time
            out = json.loads(done[-1][len("RESULT "):])
            out["wall_seconds"] = round(time.monotonic() - began, 1)
            out["note"] = f"killed at its {timeout:.0f} s limit after printing its result"
            return out, None
        return None, f"timed out after {timeout:.0f} s: {tail[-1500:]}"
    unavailable = [line for line in result.stdout.splitlines() if line.startswith("UNAVAILABLE ")]
    if unavailable:
        return None, unavailable[-1][len("UNAVAILABLE "):]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        return None, f"exit {result.returncode}: {result.stderr[-2500:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_seconds"] = round(time.monotonic() - began, 1)
    return out, None


def unsloth_missing(unsloth_site: str | None) -> str | None:
    """Why the Unsloth column cannot run (None: it can try)."""
    if not unsloth_site:
        if importlib.util.find_spec("unsloth"):
            return None
        return ("no --unsloth-site given and unsloth is not installed here (its release needs trl<=1.15 / "
                "transformers<=5.17 / datasets<5: its own environment, benchmarks/unsloth_env.py)")
    if not (Path(unsloth_site) / "unsloth" / "__init__.py").is_file():
        return f"--unsloth-site {unsloth_site} holds no unsloth package (install .unsloth_whl/*.whl there first)"
    return None


def select(names: str | None) -> tuple[Recipe, ...]:
    """The recipes named (comma-separated), in priority order; all when ``names`` is empty."""
    if not names:
        return RECIPES
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {r.name for r in RECIPES})
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}: choose from {', '.join(r.name for r in RECIPES)}")
    return tuple(r for r in RECIPES if r.name in wanted)


@dataclass
class Build:
    """The random model being written by a child on the CPU (CUDA hidden from it), so that it
    overlaps the CUDA checks instead of following them."""

    process: subprocess.Popen
    work: Path
    settings: dict[str, Any]
    log: Path


def base_settings(work: Path, *, tiny: bool = False) -> dict[str, Any]:
    """The quick benchmark's shape; ``tiny``: the same flow on a tiny model on CPU (tests: the plumbing only)."""
    seq_len, batch, warmup, measured, log_every = (128, 2, 1, 2, 1) if tiny else (2048, 8, 3, 30, 3)
    return {"tiny": tiny, "seq_len": seq_len, "steps": warmup + measured, "batch_size": batch, "warmup": warmup,
            "quantize": "4bit", "model": str(work / "model"), "words": local_qlora.WORDS, "arch": "llama",
            "log_every": log_every}


def start_build(tiny: bool = False) -> Build:
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    atexit.register(shutil.rmtree, work, True)  # the random model and the datasets: this run's only
    settings = base_settings(work, tiny=tiny)
    env = {**_child_env(Recipe("build", "build", "build", 0), None), "CUDA_VISIBLE_DEVICES": ""}
    log = work / "build.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, str(CHILD), "build", json.dumps(settings)], stdout=handle,
                                   stderr=subprocess.STDOUT, env=env)
    return Build(process, work, settings, log)


def finish_build(build: Build, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    try:
        build.process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        build.process.kill()
        return None, f"building the model took over {timeout:.0f} s"
    text = build.log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if build.process.returncode != 0 or not lines:
        return None, f"exit {build.process.returncode}: {text[-2500:]}"
    return json.loads(lines[-1][len("RESULT "):]), None


def plan(budget: float, spent: float, unsloth_site: str | None = None, recipes: tuple[Recipe, ...] = RECIPES) -> list[str]:
    """What a run with ``budget`` seconds would do once ``spent`` seconds went to the checks: one line
    per recipe with its estimate and whether it fits (the same rule :func:`run` applies)."""
    left = budget - spent - BUILD_ESTIMATE
    lines = [f"budget {budget:.0f} s: checks ~{spent:.0f} s, then model + data ~{BUILD_ESTIMATE:.0f} s, "
             f"{max(0.0, left):.0f} s for recipes (estimates: {ESTIMATES_SOURCE})"]
    for recipe in recipes:
        why = unsloth_missing(unsloth_site) if recipe.environment == "unsloth" else None
        if why:
            lines.append(f"  skip  {recipe.name:16s} ~{recipe.estimate:4.0f} s  {recipe.describe()}: {why}")
            continue
        fits = left - 15 >= MIN_FRACTION * recipe.estimate
        verdict = "run " if left - 15 >= recipe.estimate else ("run?" if fits else "cut ")
        lines.append(f"  {verdict}  {recipe.name:16s} ~{recipe.estimate:4.0f} s  {recipe.describe()} [{recipe.data} length]"
                     f" ({max(0.0, left):.0f} s left before it)")
        if fits:
            left -= recipe.estimate
    lines.append("  (run = fits its estimate; run? = starts, may be cut by the budget; cut = skipped)")
    return lines


def run(runner: Any, *, build: Build | None = None, unsloth_site: str | None = None,
        recipes: tuple[Recipe, ...] = RECIPES, progress: Any = None) -> dict[str, Any]:
    """Every recipe that fits the runner's budget, in priority order; ``progress(report)`` after each."""
    build = build or start_build()
    work, base = build.work, build.settings
    steps, batch, seq_len, warmup = base["steps"], base["batch_size"], base["seq_len"], base["warmup"]
    model_label = ("tiny random Llama on CPU (the flow only: figures mean nothing)" if base["tiny"]
                   else "Llama config with Phi-3-mini's dimensions (random, 3.8B)")
    report: dict[str, Any] = {"model": model_label, "seq_len": seq_len,
                              "batch_size": batch, "warmup_steps": warmup, "measured_steps": steps - warmup,
                              "lora": "r=16 alpha=32 all linear, dropout 0", "quantize": "NF4 + double quant, bf16 compute",
                              "data": {"variable": "log-normal lengths, median ~seq/5, prompts 10-50%",
                                       "fixed": "every example ~0.9 x seq"},
                              "recipes": {r.name: r.describe() for r in recipes}, "results": {}, "missing": {},
                              "plan": plan(runner.left() + (time.monotonic() - runner.start), time.monotonic() - runner.start,
                                           unsloth_site, recipes)}
    if not importlib.util.find_spec("trl"):
        report["missing"]["trl_fast"] = "trl is not installed (carry the wheels: benchmarks/README.md)"
    if not importlib.util.find_spec("liger_kernel"):
        report["notes"] = ["liger-kernel is not installed: TRL runs without Liger, ours without Liger kernels"]
    why = unsloth_missing(unsloth_site)
    if why:
        report["missing"]["unsloth"] = why
    began = time.monotonic()
    model, error = finish_build(build, max(30.0, runner.left() - 30))
    report["build_wait_seconds"] = round(time.monotonic() - began, 1)  # after the checks it overlapped
    if model is None:
        report["error"] = f"building the model: {error}"
        return report
    report["matmul_params"] = model["matmul_params"]
    datasets: dict[str, tuple[Path, list[int]]] = {}
    for recipe in recipes:
        name = recipe.name
        if name in report["missing"] or (recipe.child == "trl_fast" and "trl_fast" in report["missing"]
                                         and "trl is not installed" in str(report["missing"]["trl_fast"])):
            report["missing"].setdefault(name, report["missing"].get("trl_fast"))
            continue
        left = runner.left() - 15
        if left < MIN_FRACTION * recipe.estimate:
            report["missing"][name] = (f"cut by the budget: {runner.left():.0f} s left, needs ~{recipe.estimate:.0f} s "
                                       f"(estimate: {ESTIMATES_SOURCE})")
            print(f"[bench] {name}: {report['missing'][name]}", flush=True)
            continue
        if recipe.data not in datasets:
            data = work / f"{recipe.data}.jsonl"
            # enough for every step when packing fills a row with ~3.5 examples (mean ~590 tokens of 2048)
            count = steps * batch * (5 if recipe.data == "variable" else 1) + batch
            local_qlora.write_dataset(data, Path(base["model"]), seq_len, count, variable=recipe.data == "variable")
            lengths = local_qlora.real_lengths(base["model"], data)
            datasets[recipe.data] = (data, lengths)
            report.setdefault("mean_example_tokens", {})[recipe.data] = sum(lengths) / len(lengths)
        data, lengths = datasets[recipe.data]
        settings = {**base, **recipe.settings, "data": str(data), "options": recipe.options,
                    "optional_options": list(recipe.optional)}
        env = _child_env(recipe, unsloth_site)
        cwd = tempfile.mkdtemp(prefix=f"bench-{name}-")  # Unsloth writes its compiled cache under the working directory
        print(f"[bench] {name}: {recipe.describe()} (limit {left:.0f} s)", flush=True)
        result, error = child(recipe.child, settings, left, env, cwd)
        if result is None and recipe.child == "trl_fast" and runner.left() - 15 > MIN_FRACTION * recipe.estimate \
                and "option not available" not in str(error):
            print(f"[bench] {name} failed: {str(error)[-800:]}; again without Liger", flush=True)
            report["missing"][f"{name} (with Liger)"] = error
            result, error = child(recipe.child, {**settings, "liger": False}, runner.left() - 15, env, cwd)
        if result is None and recipe.environment == "unsloth" and recipe.settings.get("packing", True) \
                and "timed out" not in str(error) and runner.left() - 15 > MIN_FRACTION * recipe.estimate:
            print(f"[bench] {name} failed: {str(error)[-800:]}; again without packing", flush=True)
            report["missing"][f"{name} (packed)"] = error
            result, error = child(recipe.child, {**settings, "packing": False}, runner.left() - 15, env, cwd)
        shutil.rmtree(cwd, ignore_errors=True)
        if result is None:
            report["missing"][name] = error
            print(f"[bench] {name} missing: {str(error)[-800:]}", flush=True)
            if progress:
                progress(report)
            continue
        peak = local_qlora.card_peak(result.get("device_name"))
        result["mfu"] = local_qlora.mfu(result, model, lengths, peak)
        result["data"] = recipe.data
        report["device"] = result.get("device_name")
        report["results"][name] = result
        if progress:
            progress({**report, **ratios(report["results"])})
        print(f"[bench] {name}: {result['tokens_per_s']:.0f} tokens/s, {result.get('max_allocated_gib') or 0:.2f} GiB "
              f"allocated, {result.get('device_used_gib') or 0:.1f} GiB device, MFU {result['mfu'] or 0:.1%}, "
              f"{result['measured_steps']} measured steps, {result['wall_seconds']} s", flush=True)
    report.update(ratios(report["results"]))
    return report


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The goal's figures: ours against TRL's fast configuration and Unsloth, per data layout."""
    out: dict[str, Any] = {}
    for suffix in ("", "_fixed"):
        ours, ref, uns = results.get("ours" + suffix), results.get("trl_fast" + suffix), results.get("unsloth" + suffix)
        if ours and ref:
            out["speedup_vs_trl_fast" + suffix] = ours["tokens_per_s"] / ref["tokens_per_s"]
            for key in ("device_used_gib", "max_allocated_gib", "max_reserved_gib"):
                if ours.get(key) and ref.get(key):
                    out[f"memory_ratio_{key.removesuffix('_gib')}_vs_trl_fast{suffix}"] = ours[key] / ref[key]
        if ours and uns:
            out["speedup_vs_unsloth" + suffix] = ours["tokens_per_s"] / uns["tokens_per_s"]
    return out


CHOICE_WORDS = ("kernel", "attention", "offload", "checkpoint", "log_every", "loss", "optimizer", "fa3", "flash")


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> list[str]:
    means = report.get("mean_example_tokens") or {}
    lines = [f"## Quick benchmark: {report['model']} on {report.get('device', '?')}",
             f"seq {report['seq_len']}, batch {report['batch_size']}, {report['lora']}, {report['quantize']}; "
             f"{report['warmup_steps']} warm-up + {report['measured_steps']} measured steps per recipe; data: "
             + "; ".join(f"{k} ({v}, mean {_num(means.get(k), '.0f')} tokens/example)" for k, v in report["data"].items()
                         if k in means), "",
             "| recipe | data | layout | loss | tokens/s | vs TRL fast | vs Unsloth | max alloc GiB | reserved GiB | "
             "device GiB | MFU | measured steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        suffix = "_fixed" if r.get("data") == "fixed" else ""
        ref, uns = report["results"].get("trl_fast" + suffix), report["results"].get("unsloth" + suffix)
        vs_ref = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        vs_uns = f"{r['tokens_per_s'] / uns['tokens_per_s']:.2f}x" if uns else "-"
        label = report.get("recipes", {}).get(name, name)
        lines.append(f"| {name}: {label} | {r.get('data')} | {r.get('layout')} | {r.get('loss')} | {r['tokens_per_s']:.0f} | "
                     f"{vs_ref} | {vs_uns} | {_num(r.get('max_allocated_gib'), '.2f')} | "
                     f"{_num(r.get('max_reserved_gib'), '.2f')} | {_num(r.get('device_used_gib'), '.2f')} | "
                     f"{_num(r.get('mfu'), '.1%')} | {r.get('measured_steps')} |")
    for name, r in report["results"].items():
        chosen = {k: v for k, v in (r.get("reported") or {}).items() if any(w in k for w in CHOICE_WORDS)}
        if r.get("attention") and "attention" not in chosen:
            chosen["attention"] = r["attention"]
        if chosen:
            lines.append(f"\n- {name} chose: {json.dumps(chosen, default=str)[:900]}")
    for name, why in report.get("missing", {}).items():
        lines.append(f"\n- {name} missing: {str(why)[-400:]}")
    for note in report.get("notes", []):
        lines.append(f"\n- {note}")
    if report.get("error"):
        lines.append(f"\n- error: {report['error'][-500:]}")
    if report.get("plan"):
        lines += ["", "Plan at the start of the benchmark:", "", "```", *report["plan"], "```"]
    return lines
