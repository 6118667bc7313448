"""One recipe of benchmarks/local_qlora.py, run in its own process (so its memory is its own):
``python benchmarks/_qlora_children.py RECIPE SETTINGS_JSON`` prints ``RESULT {json}``.

Recipes: ``build`` (write the random model), ``ours`` (local_backend.trainer), ``trl``
(TRL SFTTrainer + PEFT), ``unsloth`` (Unsloth + TRL, only where installed). Every training
recipe gets the same model directory, data, sequence length, LoRA rank/targets, masking
(the answer only), precision (bf16 autocast over a 4-bit or bf16 frozen base on CUDA,
fp32 on CPU), optimiser (fused AdamW on CUDA, AdamW on CPU), gradient checkpointing
(non-reentrant, CUDA) and per-device batch size.

Timing: a clock stamp after every optimiser step, taken after the device finished it;
the first ``warmup`` steps are left out; tokens/s = real (non-padding) tokens of the
measured steps / their summed time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LORA_TARGETS = "all-linear"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class MemoryWatch:
    """Peak device-level used memory (NVML where installed, else cudaMemGetInfo), sampled
    every 20 ms in a thread, beside torch's own max allocated / max reserved."""

    def __init__(self) -> None:
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _used(self) -> int:
        import torch

        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001 - NVML missing or refused: the CUDA runtime's view
            free, total = torch.cuda.mem_get_info()
            return total - free

    def start(self) -> "MemoryWatch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

            def loop() -> None:
                while not self._stop.is_set():
                    self.peak_used = max(self.peak_used, self._used())
                    time.sleep(0.02)

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def report(self) -> dict[str, float | None]:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if torch.cuda.is_available():
            gib = 2**30
            return {
                "max_allocated_gib": torch.cuda.max_memory_allocated() / gib,
                "max_reserved_gib": torch.cuda.max_memory_reserved() / gib,
                "device_used_gib": self.peak_used / gib,
            }
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        return {"max_allocated_gib": None, "max_reserved_gib": None, "device_used_gib": rss}


def _throughput(stamps: list[float], tokens: list[int], warmup: int) -> dict[str, float]:
    """stamps[i] = end of step i (stamps[0] = start), tokens[i] = real tokens of step i+1."""
    warmup = min(warmup, len(tokens) - 1)
    seconds = stamps[-1] - stamps[warmup]
    counted = sum(tokens[warmup:])
    return {"tokens_per_s": counted / seconds, "measured_steps": len(tokens) - warmup, "measured_tokens": counted,
            "measured_seconds": seconds}


def _filled_on_cpu(cls, config):  # type: ignore[no-untyped-def]
    """The model in bf16 on the CPU without its initialisers (which draw 3.8B normals one by one:
    a minute or more): norms 1, every other weight a tile of one random block of N(0, 0.02) values
    at a shifting offset. Throughput does not depend on the values; gpu_check writes the model
    this way while its CUDA checks run."""
    import torch

    with torch.device("meta"):
        model = cls(config).to(torch.bfloat16)  # free on meta: the CPU copy is allocated in bf16 (7.6 GB, not 15)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    block = (torch.randn(1 << 22, generator=generator) * 0.02).to(torch.bfloat16)
    offset = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
                continue
            flat = param.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                chunk = flat[start:start + block.numel()]
                shift = (offset + start // block.numel() * 7919) % block.numel()
                head = min(chunk.numel(), block.numel() - shift)  # block[shift:] then block[:rest]
                chunk[:head].copy_(block[shift:shift + head])
                if head < chunk.numel():
                    chunk[head:].copy_(block[: chunk.numel() - head])
            offset += 104729
    return model


def build(settings: dict[str, Any]) -> dict[str, Any]:
    """The random model (Phi-3-mini shape on CUDA, a tiny Llama with --tiny) and its tokenizer."""
    import torch

    out = Path(settings["model"])
    words = settings["words"]
    if settings["tiny"]:
        from local_backend.tiny import build_tiny_model

        build_tiny_model(out, [" ".join(words)], hidden_size=128, intermediate_size=256, layers=2)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

        from local_backend.tiny import build_tokenizer

        # microsoft/Phi-3-mini-4k-instruct's shape: 3.8B parameters. As a Llama (arch "llama"),
        # the same dimensions with separate q/k/v and gate/up projections, which every fast
        # path (TRL + Liger, Unsloth) covers.
        shape = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                     tie_word_embeddings=False)
        shape.update(settings.get("shape") or {})  # tests: the same path at a small size
        llama = settings.get("arch") == "llama"
        config = LlamaConfig(**shape, rms_norm_eps=1e-5) if llama else Phi3Config(**shape)
        torch.manual_seed(0)
        if torch.cuda.is_available():
            with torch.device("cuda"):
                model = (LlamaForCausalLM if llama else Phi3ForCausalLM)(config).to(torch.bfloat16)
        else:
            model = _filled_on_cpu(LlamaForCausalLM if llama else Phi3ForCausalLM, config)
        model.save_pretrained(out)
        build_tokenizer([" ".join(words)]).save_pretrained(out)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
    # Parameters that do matmuls (every Linear incl. lm_head; not the embedding lookup).
    matmul = sum(m.weight.numel() for m in shell.modules() if isinstance(m, torch.nn.Linear))
    config = shell.config
    return {"matmul_params": matmul, "layers": config.num_hidden_layers, "hidden": config.hidden_size}


class Unavailable(Exception):
    """A recipe that cannot run here (an option this checkout's trainer does not have): reported, not a failure."""


def _options(settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe's trainer options (``settings["options"]``), refused by name when TrainConfig lacks one."""
    from dataclasses import fields

    from local_backend.trainer import TrainConfig

    options = dict(settings.get("options") or {})
    known = {f.name for f in fields(TrainConfig)}
    # options whose absence means the value asked for (an ablation that turns a newer feature off)
    for name in set(settings.get("optional_options") or ()) - known:
        options.pop(name, None)
    unknown = sorted(set(options) - known)
    if unknown:
        raise Unavailable(f"option not available in this checkout's trainer: {', '.join(unknown)}")
    return options


def ours(settings: dict[str, Any]) -> dict[str, Any]:
    from local_backend.trainer import Trainer, TrainConfig

    options = _options(settings)
    stamps: list[float] = []
    cumulative: list[int] = []

    log_every = int(options.pop("log_every", settings.get("log_every", 1)))
    attention: list[str] = []
    reported: dict[str, Any] = {}  # what the trainer says it chose (kernels, offload, attention) and why
    notes: list[str] = []

    def on_event(level: str, message: str, data: dict) -> None:
        if data.get("kind") == "metrics" and "train_loss" in data:  # after the interval's one host sync
            stamps.append(time.perf_counter())
            cumulative.append(int(data["trained_tokens"]))
            return
        if "attention" in data:
            attention.extend(data["attention"])
        for key, value in data.items():
            if key != "kind" and len(json.dumps(value, default=str)) < 600:
                reported[key] = value
        if len(notes) < 30 and level != "debug":
            notes.append(message[:300])

    config = TrainConfig(
        base_model=settings["model"], train_file=settings["data"], epochs=1, batch_size=settings["batch_size"],
        grad_accum=1, learning_rate=2e-4, warmup_ratio=0.0, max_seq_len=settings["seq_len"], lora_r=16,
        lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, checkpoint_every=0, log_every=log_every,
        packing=settings.get("packing"), loss_impl=settings.get("loss_impl", "auto"),
        max_steps=settings["steps"], seed=0, device="cpu" if settings["tiny"] else "auto",
        quantize="4bit" if settings["quantize"] == "4bit" and not settings["tiny"] else "none",
        **options,
    )
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="bench-ours-")), on_event=on_event)
    trainer.setup()
    watch = MemoryWatch().start()
    start = time.perf_counter()
    trainer.train(resume=False)
    tokens = [b - a for a, b in zip([0, *cumulative], cumulative)]
    # one stamp per log line: warm-up is counted in log intervals
    throughput = _throughput([start, *stamps], tokens, max(1, settings["warmup"] // log_every))
    throughput["measured_steps"] = min(throughput["measured_steps"] * log_every, settings["steps"] - settings["warmup"])
    return {
        **throughput, **watch.report(),
        "attention": attention, "log_every": log_every, "steps_per_stamp": log_every,
        "device": trainer.device, "quantized_4bit": trainer.use_4bit,
        "labelled_tokens_per_example": trainer.encode_stats.trained_tokens / max(1, len(trainer.train_examples)),
        "layout": "padding-free packed" if trainer.padding_free else "padded",
        "loss": trainer.loss_impl, "optimizer": trainer.recipe.optimizer,
        "options": settings.get("options") or {}, "options_applied": {k: v for k, v in options.items()},
        "reported": reported, "notes": notes,
    }


def _trl_run(settings: dict[str, Any], model, tokenizer, peft_config, *, fast: bool = False,  # type: ignore[no-untyped-def]
             liger: bool = True) -> dict[str, Any]:
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = _cuda() and not settings["tiny"]
    rows = [json.loads(line) for line in Path(settings["data"]).read_text().splitlines() if line.strip()]
    # Prompt/completion conversations: TRL trains the completion only (our mask: the answer only).
    pc = Path(tempfile.mkdtemp(prefix="bench-trl-data-")) / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}) + "\n" for r in rows))
    dataset = load_dataset("json", data_files=str(pc), split="train")
    stamps: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=settings["batch_size"],
        gradient_accumulation_steps=1, learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0,
        max_steps=settings["steps"], max_length=settings["seq_len"], logging_steps=1, save_strategy="no",
        report_to=[], bf16=cuda, gradient_checkpointing=cuda,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cuda else None,
        optim="adamw_torch_fused" if cuda else "adamw_torch", completion_only_loss=True, seed=0,
        use_cpu=not cuda, dataloader_num_workers=0,
        **(_trl_fast_options(liger and settings.get("liger", True)) if fast else {}),
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Clock()])
    collate = trainer.data_collator

    def counting_collator(examples):  # type: ignore[no-untyped-def]
        tokens.append(sum(len(example["input_ids"]) for example in examples))  # real tokens, not padding
        return collate(examples)

    trainer.data_collator = counting_collator  # read when train() builds the dataloader
    try:  # the labelled tokens, for the record (columns differ between TRL releases and with packing)
        labels = trainer.train_dataset["labels"]
        labelled = sum(sum(1 for x in row if x != -100) for row in labels) / max(1, len(labels))
    except Exception:  # noqa: BLE001
        labelled = None
    watch = MemoryWatch().start()
    start = time.perf_counter()
    trainer.train()
    steps = len(stamps)
    return {
        **_throughput([start, *stamps], tokens[:steps], settings["warmup"]), **watch.report(),
        "device": "cuda" if cuda else "cpu", "quantized_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
        "labelled_tokens_per_example": labelled,
        "layout": "packed (BFD), padding-free" if fast else "padded",
        "loss": "liger fused linear CE" if config.use_liger_kernel else "transformers", "optimizer": config.optim,
        "trl": _version("trl"), "datasets": _version("datasets"),
    }


def _trl_fast_options(liger: bool = True) -> dict[str, Any]:
    """TRL's own fast configuration (its docs' "reducing memory / speeding up" advice): best-fit
    decreasing packing, which makes batches padding-free, and Liger's kernels with its fused
    linear cross-entropy where liger-kernel is installed."""
    import importlib.util

    return {"packing": True, "packing_strategy": "bfd", "padding_free": True,
            "use_liger_kernel": liger and importlib.util.find_spec("liger_kernel") is not None}


def trl(settings: dict[str, Any], *, fast: bool = False) -> dict[str, Any]:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    cuda = _cuda() and not settings["tiny"]
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        kwargs["device_map"] = {"": 0}
        if settings["quantize"] == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
    model = AutoModelForCausalLM.from_pretrained(settings["model"], **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return _trl_run(settings, model, tokenizer, peft_config, fast=fast)


def trl_fast(settings: dict[str, Any]) -> dict[str, Any]:
    return trl(settings, fast=True)


def _version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


UNSLOTH_ENV = {  # offline and quiet: no Hub, no statistics ping (has_internet() is False offline), no telemetry
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_ENABLE_HF_TRANSFER": "0",
}


def unsloth(settings: dict[str, Any]) -> dict[str, Any]:
    """Unsloth's own recipe (FastLanguageModel 4-bit + its LoRA + its gradient checkpointing) under TRL's
    fast configuration (packing, padding-free; Unsloth's own kernels instead of Liger). It runs in an
    environment of its own (benchmarks/unsloth_env.py): ``import unsloth`` comes first, as Unsloth asks."""
    for key, value in UNSLOTH_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", tempfile.mkdtemp(prefix="unsloth-compiled-"))
    import unsloth as unsloth_module  # noqa: F401 - before trl / transformers / peft: it patches them
    from unsloth import FastLanguageModel
    import torch

    cuda = _cuda() and not settings["tiny"]
    model, tokenizer = FastLanguageModel.from_pretrained(
        settings["model"], max_seq_length=settings["seq_len"], load_in_4bit=cuda and settings["quantize"] == "4bit",
        dtype=torch.bfloat16 if cuda else torch.float32, local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0.0, bias="none", random_state=0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],  # = all-linear on Llama
        use_gradient_checkpointing="unsloth" if cuda else False,
    )
    result = _trl_run(settings, model, tokenizer, None, fast=settings.get("packing", True), liger=False)
    result.update(unsloth=_version("unsloth"), unsloth_zoo=_version("unsloth_zoo"),
                  loss="Unsloth's own", attention=_unsloth_attention())
    return result


def _unsloth_attention() -> str | None:
    try:
        from unsloth.models import _utils

        return ("xformers" if getattr(_utils, "xformers", None) is not None else
                "flash-attn" if getattr(_utils, "HAS_FLASH_ATTENTION", False) else "torch SDPA")
    except Exception:  # noqa: BLE001
        return None


def main() -> int:
    recipe, settings = sys.argv[1], json.loads(sys.argv[2])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if recipe != "unsloth":  # Unsloth's own environment decides for itself
        from local_backend.procs import skip_unused_imports

        skip_unused_imports()  # as the product's worker does (bitsandbytes is CUDA-only; the import costs ~1.3 s)
    # every temporary file of a recipe (its trainer's output, TRL's data and checkpoints) under one
    # folder that goes with the child: the run leaves nothing in /tmp
    scratch = tempfile.mkdtemp(prefix="bench-child-")
    tempfile.tempdir = scratch
    try:
        result = {"build": build, "ours": ours, "trl": trl, "trl_fast": trl_fast, "unsloth": unsloth}[recipe](settings)
    except Unavailable as exc:
        print(f"UNAVAILABLE {exc}", flush=True)
        return 3
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if recipe != "build" and _cuda() and not settings["tiny"]:
        import torch

        result["device_name"] = torch.cuda.get_device_name(0)
    print("RESULT " + json.dumps(result), flush=True)
    sys.stderr.flush()
    # Leave now: a library's leftover threads or exit hooks (compile workers, telemetry) must not hold
    # the parent until its time limit with the result already printed.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
