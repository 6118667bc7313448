"""OpenAIProvider through the real openai SDK against the emulator: error translation,
retries, uploads, event cursors, job options, deployments and the capability table."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from cloudtune import errors
from cloudtune.emulators._http import Fault
from cloudtune.types import FineTuneSpec, Hyperparameters, JobState, Method
from providers.openai import OpenAIProvider, capabilities
from tests.openai.conftest import BASE_MODEL, KEY_ENV, TEST_KEY, Emulated, chat_example, write_training_file


def spec(training: Path, **kw) -> FineTuneSpec:  # type: ignore[no-untyped-def]
    return FineTuneSpec(provider="openai", base_model=BASE_MODEL, training_file=training, **kw)


class RecordingSleep:
    """Sleeps by advancing the emulator clock, remembering every delay asked for."""

    def __init__(self, emulated: Emulated) -> None:
        self.emulated = emulated
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.emulated.sleep(seconds)


def test_wrong_key_is_an_auth_error_that_says_what_to_check(emulated: Emulated, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-not-the-right-one-987")
    provider = OpenAIProvider(emulated.options(tmp_path), sleep=emulated.sleep)
    with pytest.raises(errors.AuthError) as caught:
        provider.get_job("ftjob-x")
    error = caught.value
    assert error.exit_code == errors.EXIT_AUTH and error.status_code == 401 and error.request_id
    assert "OPENAI_API_KEY" in error.hint and "not-the-right-one" not in str(error) + error.hint
    result = provider.check()
    assert result.ok is False and result.credentials_found is True and result.details["api_reachable"] is False


def test_missing_key_is_reported_by_check_and_raised_as_auth_error(emulated: Emulated, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    provider = OpenAIProvider(emulated.options(tmp_path))
    result = provider.check()
    assert result.ok is False and result.credentials_found is False and KEY_ENV in result.problems[0]
    with pytest.raises(errors.AuthError):
        provider.list_jobs()


def test_rate_limits_are_retried_after_the_retry_after_delay(emulated: Emulated, tmp_path: Path) -> None:
    sleep = RecordingSleep(emulated)
    provider = OpenAIProvider(emulated.options(tmp_path), sleep=sleep)
    emulated.app.faults.add(Fault(route="GET /v1/fine_tuning/jobs$", status=429, retry_after=7, times=3))
    assert provider.list_jobs() == []
    assert sleep.delays == [7, 7, 7]
    emulated.app.faults.add(Fault(route="GET /v1/fine_tuning/jobs$", status=429, retry_after=1, times=-1))
    with pytest.raises(errors.RateLimited) as caught:
        provider.list_jobs()
    assert caught.value.retry_after == 1 and caught.value.status_code == 429


def test_insufficient_quota_is_a_capability_error(emulated: Emulated, tmp_path: Path) -> None:
    provider = OpenAIProvider(emulated.options(tmp_path), sleep=emulated.sleep)
    emulated.app.faults.add(Fault(route="GET /v1/models", status=429, code="insufficient_quota", message="No credit."))
    with pytest.raises(errors.QuotaExceeded) as caught:
        provider.list_deployments()
    assert caught.value.exit_code == errors.EXIT_CAPABILITY


def test_create_is_sent_once_and_the_run_id_finds_the_job(provider: OpenAIProvider, emulated: Emulated,
                                                          training_file: Path) -> None:
    file_id = provider.upload_file(training_file)
    # the service creates the job, then the answer is lost as a 500
    emulated.app.faults.add(Fault(route="POST /v1/fine_tuning/jobs$", status=500, after=True))
    with pytest.raises(errors.TransientError):
        provider.create_job(spec(training_file), training_file_id=file_id, validation_file_id=None, run_id="run-500")
    assert emulated.app.snapshot()["jobs"] == 1  # no SDK retry made a second job
    found = provider.find_jobs("run-500")
    assert len(found) == 1 and found[0].metadata["cloudtune_run_id"] == "run-500"
    assert provider.find_jobs("run-other") == []


def test_job_options_reach_the_service(provider: OpenAIProvider, emulated: Emulated, tmp_path: Path) -> None:
    training = tmp_path / "dpo.jsonl"
    training.write_text("".join(json.dumps({
        "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
        "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
        "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}],
    }) + "\n" for i in range(12)))
    file_id = provider.upload_file(training)
    job = provider.create_job(
        spec(training, method=Method.DPO, suffix="prefs", seed=7, metadata={"team": "search"},
             hyperparameters=Hyperparameters(epochs=2, batch_size=4, learning_rate_multiplier=0.5, beta=0.2)),
        training_file_id=file_id, validation_file_id=None, run_id="run-dpo")
    record = emulated.app.jobs[job.id]
    assert record.method == {"type": "dpo", "dpo": {"hyperparameters": {
        "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5, "beta": 0.2}}}
    assert record.suffix == "prefs" and record.seed == 7
    assert job.metadata == {"team": "search", "cloudtune_run_id": "run-dpo"}
    assert job.state == JobState.VALIDATING and job.provider_status == "validating_files"


def test_permission_refused_on_create_points_at_the_wind_down(provider: OpenAIProvider, emulated: Emulated,
                                                              training_file: Path) -> None:
    file_id = provider.upload_file(training_file)
    emulated.app.faults.add(Fault(route="POST /v1/fine_tuning/jobs$", status=403, code="permission_denied",
                                  message="You are not allowed to create fine-tuning jobs."))
    with pytest.raises(errors.AuthError) as caught:
        provider.create_job(spec(training_file), training_file_id=file_id, validation_file_id=None, run_id="r")
    assert caught.value.exit_code == errors.EXIT_AUTH
    assert "2027-01-06" in caught.value.hint and "deprecations" in caught.value.hint


def test_uploads_api_above_the_threshold_in_ordered_parts(emulated: Emulated, tmp_path: Path) -> None:
    training = write_training_file(tmp_path / "big.jsonl", 30)
    size = training.stat().st_size
    progress: list[tuple[int, int]] = []
    provider = OpenAIProvider(emulated.options(tmp_path, upload_threshold_bytes=1000, upload_part_bytes=700,
                                               upload_workers=3), sleep=emulated.sleep)
    # a dropped part is sent again; only the ids passed to complete count
    emulated.app.faults.add(Fault(route="POST /v1/uploads/[^/]+/parts", kind="drop", skip=1))
    file_id = provider.upload_file(training, progress=lambda sent, total: progress.append((sent, total)))
    stored = emulated.app.files[file_id]
    assert stored.content == training.read_bytes()  # the parts were put back in file order
    [upload] = emulated.app.uploads.values()
    assert upload.status == "completed" and upload.file_id == file_id
    assert progress[-1] == (size, size) and len(progress) == -(-size // 700)
    assert any(hit.startswith("drop:POST /v1/uploads/") for hit in emulated.app.faults.hits)


def test_a_small_upload_is_never_sent_twice_and_a_lost_answer_is_found_by_name(
        provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    # the connection drops before the service stored anything: an error, and nothing stored
    emulated.app.faults.add(Fault(route="POST /v1/files$", kind="drop"))
    with pytest.raises(errors.TransientError):
        provider.upload_file(training_file)
    assert list(emulated.app.files) == []
    # stored, then the answer is lost: still an error (the SDK does not retry: no second copy) ...
    emulated.app.faults.add(Fault(route="POST /v1/files$", kind="drop", after=True))
    with pytest.raises(errors.TransientError):
        provider.upload_file(training_file)
    assert len(emulated.app.files) == 1
    # ... and the pipeline finds it by its (run-tagged) name instead of uploading again
    found = provider.find_uploaded(training_file, since=0)
    assert found == next(iter(emulated.app.files))


def test_events_come_oldest_first_across_pages_and_after_a_cursor(provider: OpenAIProvider, emulated: Emulated,
                                                                   tmp_path: Path) -> None:
    emulated.app.settings.max_steps = 150  # more events than one page of 100
    training = write_training_file(tmp_path / "t.jsonl", 60)
    job = provider.create_job(spec(training, hyperparameters=Hyperparameters(epochs=3)),
                              training_file_id=provider.upload_file(training), validation_file_id=None, run_id="ev")
    emulated.sleep(1000)
    emulated.app.snapshot()  # brings every job up to the clock
    raw = list(emulated.app.jobs[job.id].events)
    assert len(raw) > 150
    events = provider.list_events(job.id, limit=1000)
    assert [e.id for e in events] == [e["id"] for e in raw]
    assert events[0].message == "Created fine-tuning job" and events[-1].message == "The job has successfully completed"
    middle = events[40].id
    assert [e.id for e in provider.list_events(job.id, after=middle, limit=5)] == [e.id for e in events[41:46]]
    assert provider.list_events(job.id, after=events[-1].id) == []
    metrics = [e for e in events if e.data.get("type") == "metrics"]
    assert metrics and {"step", "train_loss"} <= set(metrics[0].data)
    checkpoints = provider.list_checkpoints(job.id)
    assert [c.step for c in checkpoints] == sorted(c.step for c in checkpoints) and checkpoints[-1].step == 150
    assert checkpoints[-1].model.endswith(":ckpt-step-150") and "train_loss" in checkpoints[-1].metrics


def test_a_failed_job_carries_the_line_the_service_blamed(provider: OpenAIProvider, emulated: Emulated,
                                                          tmp_path: Path) -> None:
    training = tmp_path / "t.jsonl"
    lines = [json.dumps(chat_example(i)) for i in range(12)]
    lines[6] = "{not json"
    training.write_text("\n".join(lines) + "\n")
    job = provider.create_job(spec(training), training_file_id=provider.upload_file(training),
                              validation_file_id=None, run_id="bad")
    emulated.sleep(10)
    failed = provider.get_job(job.id)
    assert failed.state == JobState.FAILED and failed.error.code == "invalid_training_file"
    assert failed.error.line == 7 and failed.error.param == "training_file"


def test_pause_resume_and_cancel(provider: OpenAIProvider, emulated: Emulated, training_file: Path) -> None:
    job = provider.create_job(spec(training_file), training_file_id=provider.upload_file(training_file),
                              validation_file_id=None, run_id="p")
    emulated.sleep(6)
    assert provider.pause_job(job.id).state == JobState.PAUSED
    assert provider.pause_job(job.id).state == JobState.PAUSED  # already paused: done
    assert provider.resume_job(job.id).state == JobState.RUNNING
    assert provider.cancel_job(job.id).state == JobState.CANCELLED
    assert provider.cancel_job(job.id).state == JobState.CANCELLED  # cancelling twice is fine
    with pytest.raises(errors.NotFound):
        provider.pause_job("ftjob-missing")


def test_deployment_names_survive_a_new_provider_instance(emulated: Emulated, tmp_path: Path,
                                                          training_file: Path) -> None:
    first = OpenAIProvider(emulated.options(tmp_path), sleep=emulated.sleep, clock=emulated.clock.now)
    job = first.create_job(spec(training_file), training_file_id=first.upload_file(training_file),
                           validation_file_id=None, run_id="d")
    emulated.sleep(100)
    model = first.get_job(job.id).fine_tuned_model
    deployed = first.deploy(model, name="ct-demo")
    assert deployed.state.value == "ready" and deployed.endpoint_url.endswith("/chat/completions")
    with pytest.raises(errors.Conflict):
        first.deploy(BASE_MODEL, name="ct-demo")  # the name already serves another model
    second = OpenAIProvider(emulated.options(tmp_path), sleep=emulated.sleep)  # e.g. `cloudtune status` later
    assert second.get_deployment("ct-demo").model == model
    assert [d.name for d in second.list_deployments(model)] == ["ct-demo"]
    assert second.chat("ct-demo", [{"role": "user", "content": "What is the capital of country 2?"}]).content == \
        "The capital of country 2 is City 2."
    assert second.get_deployment(model).managed_by_cloudtune is False  # a model id serves as itself
    with pytest.raises(errors.NotFound):
        second.deploy("ft:gpt-4o-mini-2024-07-18:emulator::missing", name="ct-x")
    second.delete_model(model)
    with pytest.raises(errors.NotFound):
        second.get_deployment("ct-demo")
    assert second.list_deployments() == []
    assert TEST_KEY not in (tmp_path / "deployments.json").read_text()


def test_capability_table_is_dated_and_sourced() -> None:
    table = capabilities.capability_table(today=date(2026, 8, 1))
    assert table["as_of"] and all(source.startswith("https://") for source in table["sources"])
    models = {row["model"]: row for row in table["models"]}
    assert "dpo" in models["gpt-4o-mini-2024-07-18"]["methods"]
    assert models["gpt-4o-mini-2024-07-18"]["training_context_tokens"] == 65_536
    assert [phase["from"] for phase in table["wind_down"]] == ["2026-05-07", "2026-07-02", "2027-01-06"]
    assert "since 2026-07-02" in table["wind_down_status"] and "from 2027-01-06" in table["wind_down_status"]
    assert capabilities.creation_blocked_for_everyone(date(2027, 1, 6))
    assert not capabilities.creation_blocked_for_everyone(date(2027, 1, 5))


def test_check_reports_capabilities_and_wind_down(provider: OpenAIProvider) -> None:
    provider.options["base_model"] = "gpt-4o-mini"
    result = provider.check()
    assert result.ok and result.sdk_installed and result.details["api_reachable"] is True
    assert result.details["base_model"]["name"] == BASE_MODEL
    assert "2027-01-06" in result.details["fine_tuning_availability"]
    assert any(row.startswith(BASE_MODEL) for row in result.details["fine_tunable_models"])
    provider.options["base_model"] = "gpt-9-ultra"
    assert "gpt-9-ultra" in provider.check().details["warning"]


def test_an_upload_whose_answer_was_lost_is_found_by_name_size_and_time(provider: OpenAIProvider,
                                                                        emulated: Emulated,
                                                                        training_file: Path) -> None:
    before = emulated.app.clock.now()
    file_id = provider.upload_file(training_file)
    assert provider.find_uploaded(training_file, since=before) == file_id
    assert provider.find_uploaded(training_file, since=before + 3600) is None  # uploaded before the intent
    other = training_file.with_name("other.jsonl")
    other.write_bytes(training_file.read_bytes())
    assert provider.find_uploaded(other, since=before) is None  # another file name
