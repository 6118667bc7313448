"""``cloudtune export RUN --merged DIR``: merge a local fine-tuned model's LoRA adapter into
a freshly loaded, unquantised base model and save a plain transformers directory.

The base is always reloaded in full precision (fp32 on CPU, bf16 on CUDA): merging
into 4-bit weights would round the adapter away.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cloudtune import errors


def export_merged(model_id: str, out_dir: Path | str, *, overwrite: bool = False) -> Path:
    """Merge ``local:<job_id>`` into its base and save it to ``out_dir``; returns ``out_dir``."""
    import torch
    from peft import PeftModel

    from local_backend.jobs import JobDir
    from local_backend.sources import load_model, load_tokenizer, resolve_source

    if not model_id.startswith("local:"):
        raise errors.InvalidInput(f"{model_id} is not a local fine-tuned model (expected local:<job_id>)")
    try:
        job = JobDir(model_id[len("local:") :])
    except KeyError:
        raise errors.NotFound(f"local model {model_id} does not exist", provider="local") from None
    if not (job.adapter_dir / "adapter_config.json").is_file():
        raise errors.NotFound(f"local model {model_id} has no adapter (job not finished, or model deleted)", provider="local")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise errors.InvalidInput(f"{out} is not empty", hint="choose a new directory")
        shutil.rmtree(out)
    source = resolve_source(job.spec()["base_model"])
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    base = load_model(source, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(job.adapter_dir)).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    load_tokenizer(source).save_pretrained(tmp)
    tmp.rename(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run id (or a local:<job_id> model id)")
    parser.add_argument("--merged", required=True, type=Path, metavar="DIR", help="write the merged model here")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it is not empty")


def _model_for(reference: str) -> str:
    if reference.startswith("local:"):
        return reference
    from cloudtune.state import open_state

    run = open_state().get_run(reference)
    if run.provider != "local":
        raise errors.InvalidInput(f"run {reference} used the {run.provider} provider; only local models can be exported")
    if not run.fine_tuned_model:
        raise errors.InvalidInput(f"run {reference} has no fine-tuned model yet")
    return run.fine_tuned_model


def run(args: argparse.Namespace) -> int:
    out = export_merged(_model_for(args.run), args.merged, overwrite=args.overwrite)
    print(f"merged model written to {out}")
    return 0
