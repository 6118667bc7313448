"""``export_merged``: the adapter merged into a freshly loaded full-precision base gives
the same outputs as base + adapter, saved as a plain transformers directory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.types import FineTuneSpec, JobState
from tests.local.conftest import TARGET_ANSWER, fast_hyperparameters


def test_export_merged_matches_base_plus_adapter(provider, tiny_model_dir: Path, training_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from local_backend.chat_format import prompt_ids
    from local_backend.export import export_merged
    from local_backend.inference import ChatModel

    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training_file,
                        hyperparameters=fast_hyperparameters(epochs=10))
    file_id = provider.upload_file(training_file)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id="run-export")
    final = poller.wait_for_job(provider, job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic)
    assert final.state == JobState.SUCCEEDED

    out = export_merged(final.fine_tuned_model, tmp_path / "merged")
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    served = ChatModel(str(tiny_model_dir), Path(provider._jobdir(job.id).adapter_dir))
    ids = torch.tensor([prompt_ids(tokenizer, [{"role": "user", "content": "Question number 77?"}])])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, served.model(ids).logits, rtol=1e-4, atol=1e-4)
    assert served.complete([{"role": "user", "content": "Question number 77?"}], temperature=0).text == TARGET_ANSWER

    with pytest.raises(errors.InvalidInput):
        export_merged(final.fine_tuned_model, out)  # not empty, no overwrite
    with pytest.raises(errors.NotFound):
        export_merged("local:ftjob-local-000000000000", tmp_path / "none")

    # the `cloudtune export RUN --merged DIR` entry point accepts a model id too
    import argparse

    from local_backend import export

    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args([final.fine_tuned_model, "--merged", str(tmp_path / "via-cli")])
    assert export.run(args) == 0 and (tmp_path / "via-cli" / "config.json").is_file()
