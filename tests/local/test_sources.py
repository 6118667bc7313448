"""Where base models come from: aliases of the built-in model, local directories,
missing GGUF files, and a clear error for a Hub id that is neither cached nor reachable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from local_backend.sources import ModelUnavailable, load_model, load_tokenizer, resolve_source
from tests.support.cli_zygote import run_cloudtune


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct", "SmolLM2"])
def test_builtin_aliases(name: str, empty_hf_cache: None) -> None:
    source = resolve_source(name)
    assert source.kind == "builtin"
    assert source.path.endswith(".gguf") and Path(source.path).is_file()


def test_local_directory(tiny_model_dir: Path) -> None:
    source = resolve_source(str(tiny_model_dir))
    assert source.kind == "dir"
    assert load_tokenizer(source).eos_token == "<|im_end|>"
    assert load_model(source).config.num_hidden_layers == 2


def test_uncached_hub_id_offline_is_a_clear_error(empty_hf_cache: None) -> None:
    source = resolve_source("someone/not-a-cached-model")
    assert source.kind == "hf"
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as caught:
        load_tokenizer(source)
    assert time.monotonic() - started < 30
    assert "not in the local cache" in str(caught.value)
    assert "huggingface-cli download someone/not-a-cached-model" in caught.value.hint
    assert caught.value.exit_code == 2


def test_missing_gguf_and_nonsense_names() -> None:
    with pytest.raises(ModelUnavailable):
        resolve_source("/nowhere/model.gguf")
    with pytest.raises(ModelUnavailable):
        resolve_source("not a model")


def test_cached_tokenizer_dir_never_converts_or_downloads(local_home, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    from local_backend.sources import cached_tokenizer_dir

    assert cached_tokenizer_dir(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert cached_tokenizer_dir("smollm2-135m-instruct") is None  # not converted in this fresh home
    assert not (local_home / "models").exists()
    assert cached_tokenizer_dir("nobody/not-in-the-cache") is None


def test_validate_counts_local_models_with_their_own_tokenizer(local_home, tiny_model_dir, training_file) -> None:  # type: ignore[no-untyped-def]
    import json

    done = run_cloudtune(["validate", str(training_file), "--provider", "local", "--model", str(tiny_model_dir),
                          "--json"], Path.cwd(), dict(os.environ), 120)
    counts = json.loads(done.stdout)["token_counts"]
    assert counts["tokenizer"] == f"huggingface:{tiny_model_dir.name}"
    assert counts["exact"] is True and counts["training"]["total"] > 0


def _tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_token_list(["<s>", "</s>", "hello"])
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_conversion_parses_the_file_once_then_puts_gguf_back(tmp_path: Path) -> None:
    """Within ``gguf_parsed_once`` every reader of the same file is the one parsed first (transformers
    builds three per conversion) and the tensor-name map is built once; after it, gguf is as it was."""
    import gguf

    from local_backend.sources import gguf_parsed_once

    path = _tiny_gguf(tmp_path / "tiny.gguf")
    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same parse, whatever the path's type
        assert [t.name for t in first.tensors] == ["token_embd.weight"]
        assert first.fields["llama.block_count"].contents() == 2
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is name_map
        assert name_map.get_name("model.embed_tokens") == "token_embd"
    assert gguf.GGUFReader is original_reader and gguf.get_tensor_name_map is original_name_map
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)  # outside it: a new parse each time
