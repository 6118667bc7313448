"""Exact tiktoken token counts from ``bpe-openai``'s Rust BPE, fast.

Why not tiktoken itself: the validator only needs *counts*. tiktoken builds
a list of token ids for every text and then we take its length; bpe-openai's
``count`` walks the same pre-tokenizer and the same merge tables (the
``o200k_base`` / ``cl100k_base`` files tiktoken downloads, shipped inside the
wheel) and returns the number directly, about twice as fast on chat text and
linear where tiktoken degrades (tiktoken panics with a stack overflow on a
2 MB run of spaces; bpe-openai counts it). The counts are the same: the tests
compare both on a large varied sample (prose, code, numbers, 15 Unicode
blocks, emoji, combining marks, control tokens written as text, 100 kB runs).

Why load the extension module directly: ``import bpe_openai`` runs the
package's tiktoken-compatibility layer, which parses every encoding table in
Python (about 1.2 s at each start of ``cloudtune validate``); the compiled
``_bindings`` module alone loads in milliseconds and has everything we use.
We register it under its real name so a later ``import bpe_openai`` reuses it
(a PyO3 module cannot be initialised twice in one process).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from ._once import LoadOnce

_MODULE = "bpe_openai._bindings"


def _bindings():
    module = sys.modules.get(_MODULE)
    if module is not None:
        return module
    if "bpe_openai" in sys.modules:  # the package is imported already: its own import is cheap now
        return importlib.import_module(_MODULE)
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("bpe-openai is not installed")
    for location in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(location) / f"_bindings{suffix}"
            if not path.is_file():
                continue
            loader = importlib.machinery.ExtensionFileLoader(_MODULE, str(path))
            module_spec = importlib.util.spec_from_file_location(_MODULE, str(path), loader=loader)
            module = importlib.util.module_from_spec(module_spec)
            loader.exec_module(module)
            sys.modules[_MODULE] = module
            return module
    return importlib.import_module(_MODULE)  # an unusual layout: the slow, ordinary way


def _load_tokenizer(encoding_name: str):
    tokenizer = _bindings().tokenizer_for_encoding(encoding_name)
    tokenizer.count("")  # fail here, not on the first line of a file
    return tokenizer


_tokenizers = LoadOnce(_load_tokenizer)


def get_tokenizer(encoding_name: str):
    """bpe-openai's tokenizer for a tiktoken encoding name (``o200k_base``,
    ``cl100k_base``), or ``None`` when bpe-openai cannot provide it
    (``failure_reason`` says why). Thread-safe; loads each encoding once."""
    return _tokenizers.get(encoding_name)


def failure_reason(encoding_name: str) -> str | None:
    return _tokenizers.failure_reason(encoding_name)
