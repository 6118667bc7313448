"""OpenAI as of November 2026 (issue 10 points 7-9): shut-down bases, the date a fine-tune stops
serving, the wind-down's 403, no waiting on the deprecated file status, bounded job scans; through
the openai SDK against the emulator, which enforces the same rules."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from cloudtune import errors
from cloudtune.ledger import new_run_id
from cloudtune.types import FineTuneSpec
from providers.openai import OpenAIProvider
from tests.openai.conftest import BASE_MODEL, Emulated


def _spec(model: str, training: Path) -> FineTuneSpec:
    return FineTuneSpec(provider="openai", base_model=model, training_file=training)


def test_shut_down_bases_are_refused_before_upload_with_both_ways_forward(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    import openai

    for model in ("gpt-4.1-nano-2025-04-14", "gpt-3.5-turbo-0125"):
        with pytest.raises(errors.CapabilityError) as caught:
            provider.plan(_spec(model, training_file))
        assert caught.value.exit_code == errors.EXIT_CAPABILITY and "2026-10-23" in str(caught.value)
        assert "--provider azure --model" in str(caught.value.hint) and "--provider local" in str(caught.value.hint)
    assert "--provider azure --model gpt-4.1-nano-2025-04-14" in str(
        pytest.raises(errors.CapabilityError, provider.plan, _spec("gpt-4.1-nano", training_file)).value.hint)
    assert emulated.app.files == {}  # nothing was uploaded
    # the emulator refuses the same job
    with pytest.raises(openai.BadRequestError) as refused:
        provider.client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file="file-x")
    assert "shut down" in str(refused.value)


def test_the_date_a_fine_tune_stops_serving_comes_from_the_models_api_then_the_table(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path,
        tmp_path: Path) -> None:
    notes = provider.plan(_spec(BASE_MODEL, training_file))
    assert any("stops serving on 2027-01-14" in n and "GET /v1/models" in n for n in notes), notes
    assert any("2027-01-06" in n for n in notes)
    assert provider.shutdown_date(BASE_MODEL) == (date(2027, 1, 14), "GET /v1/models")
    # offline: the dated table answers
    offline = OpenAIProvider(emulated.options(tmp_path, base_url="http://127.0.0.1:9/v1"), sleep=lambda s: None)
    stops, source = offline.shutdown_date("ft:gpt-4.1-mini-2025-04-14:org::abc")
    assert stops == date(2027, 1, 14) and "deprecations" in source
    offline.close()


def test_after_the_wind_down_job_creation_is_refused(provider: OpenAIProvider, training_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_TODAY", "2027-01-06")
    with pytest.raises(errors.CapabilityError) as caught:
        provider.plan(_spec("gpt-4.1-2025-04-14", training_file))
    assert "2027-01-06" in str(caught.value)


def test_403_training_not_available_exits_4_naming_the_azure_and_local_commands(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    file_id = provider.upload_file(training_file)
    emulated.app.settings.training_available = False
    with pytest.raises(errors.CapabilityError) as caught:
        provider.create_job(_spec(BASE_MODEL, training_file), training_file_id=file_id, validation_file_id=None,
                            run_id=new_run_id())
    error = caught.value
    assert error.exit_code == errors.EXIT_CAPABILITY and error.code == "training_not_available"
    assert "--provider azure --model gpt-4o-mini-2024-07-18" in str(error.hint)
    assert "--provider local --model" in str(error.hint) and "2027-01-06" in str(error.hint)


def test_a_job_is_created_on_a_file_still_processing_and_an_errored_file_fails_fast(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path, tmp_path: Path) -> None:
    emulated.app.settings.file_processing_s = 3600.0  # "processing" for an hour
    started = emulated.clock.now()
    file_id = provider.upload_file(training_file)
    assert emulated.clock.now() - started < 1.0  # no waiting for "processed"
    assert provider.client.files.retrieve(file_id).status == "uploaded"
    job = provider.create_job(_spec(BASE_MODEL, training_file), training_file_id=file_id, validation_file_id=None,
                              run_id=new_run_id())
    assert job.id.startswith("ftjob-")
    provider.cancel_job(job.id)
    emulated.app.settings.file_processing_s = 0.0
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + training_file.read_bytes())
    with pytest.raises(errors.DatasetError) as caught:  # the service marked it "error": fail fast
        provider.upload_file(with_bom)
    assert "byte-order mark" in str(caught.value)


def test_finding_a_runs_job_stops_at_jobs_older_than_the_run(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    emulated.app.settings.file_processing_s = 0.0
    file_id = provider.upload_file(training_file)
    for _ in range(250):  # a user with many older jobs (created before the run)
        provider.client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=file_id,
                                                metadata={"cloudtune_run_id": "someone-else"})
    emulated.app.settings.endless_has_more = True  # and an API that never stops saying has_more
    emulated.app.settings.ignores_metadata_filter = True  # nor filters
    emulated.clock.advance(3600)
    import time

    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(emulated.clock.now())) + "-" + uuid.uuid4().hex[:6]
    before = len(emulated.app.request_log)
    assert provider.find_jobs(run_id) == []
    listings = [line for line in emulated.app.request_log[before:] if line.startswith("GET /v1/fine_tuning/jobs")]
    assert 1 <= len(listings) <= 2, listings


def test_a_checkpoint_deploys_like_the_model_and_says_when_it_stops_serving(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    from cloudtune import poller
    from cloudtune.types import JobState

    file_id = provider.upload_file(training_file)
    job = provider.create_job(_spec(BASE_MODEL, training_file), training_file_id=file_id, validation_file_id=None,
                              run_id=new_run_id())
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=emulated.sleep, clock=emulated.clock.now)
    assert final.state == JobState.SUCCEEDED
    checkpoint = provider.list_checkpoints(job.id)[0]
    assert checkpoint.model and ":ckpt-step-" in checkpoint.model
    deployed = provider.deploy(checkpoint.model, name="ckpt-" + uuid.uuid4().hex[:6])
    assert deployed.model == checkpoint.model
    assert any("stops serving on 2027-01-14" in note for note in deployed.details["notes"])
    assert provider.chat(deployed.name, [{"role": "user", "content": "What is the capital of country 1?"}]).content
    with pytest.raises(errors.NotFound):
        provider.deploy(checkpoint.model.replace("ckpt-step-", "ckpt-step-999"), name="nope")
