"""Azure OpenAI route against the service rules of November 2026 (issue 10 points 1-4), through the
real ``openai`` and azure-core SDKs against the emulator, which refuses what the service refuses."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.emulators.azure import AzureEmulator
from cloudtune.types import DeploymentState, DeployOptions, FineTuneSpec, JobState
from providers.azure import AzureProvider
from tests.azure.conftest import EmulatedTime

EASTUS = {"endpoint": "https://ct-aoai-eus.openai.azure.com", "account": "ct-aoai-eus"}


def _provider(emulator: AzureEmulator, base_model: str, **options: object) -> tuple[AzureProvider, EmulatedTime]:
    time = EmulatedTime(emulator)
    return AzureProvider({"base_model": base_model, **options}, sleep=time.sleep, clock=time.clock), time


def _run_id() -> str:
    from cloudtune.ledger import new_run_id

    return new_run_id()


def _upload(provider: AzureProvider, tmp_path: Path, training: Path, run_id: str) -> str:
    copy = tmp_path / f"ct-{run_id}-training.jsonl"
    copy.write_bytes(training.read_bytes())
    return provider.upload_file(copy)


def _job(emulator: AzureEmulator, job_id: str) -> dict:
    with emulator.app.lock:
        return dict(emulator.app.store.ft_jobs[job_id])


def test_v1_is_the_default_surface_and_training_type_defaults_to_global(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    provider, _ = _provider(azure_emulator, "gpt-4.1-mini")
    notes = provider.plan(FineTuneSpec(provider="azure", base_model="gpt-4.1-mini", training_file=training_file))
    assert any("resolved to gpt-4.1-mini-2025-04-14" in note for note in notes)
    assert any("GlobalStandard" in note and "swedencentral" in note for note in notes)
    before = len(azure_emulator.app.request_log)
    run_id = _run_id()
    file_id = _upload(provider, tmp_path, training_file, run_id)
    spec = FineTuneSpec(provider="azure", base_model="gpt-4.1-mini", training_file=training_file)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id)
    sent = azure_emulator.app.request_log[before:]
    assert any(line.startswith("POST /openai/v1/fine_tuning/jobs") for line in sent), sent
    assert not any(line.startswith("POST /openai/fine_tuning") for line in sent)
    stored = _job(azure_emulator, job.id)
    assert stored["training_type"] == "GlobalStandard" and stored["model"] == "gpt-4.1-mini-2025-04-14"
    assert stored["metadata"]["cloudtune_run_id"] == run_id
    assert [j.id for j in provider.find_jobs(run_id)] == [job.id]
    provider.cancel_job(job.id)


def test_a_training_type_the_region_lacks_stops_before_upload_naming_what_works(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    import openai

    spec = FineTuneSpec(provider="azure", base_model="gpt-4.1-mini", training_file=training_file)
    provider, _ = _provider(azure_emulator, "gpt-4.1-mini", training_type="Standard", **EASTUS)
    with pytest.raises(errors.CapabilityError) as caught:
        provider.plan(spec)
    message = str(caught.value) + str(caught.value.hint)
    assert caught.value.exit_code == errors.EXIT_CAPABILITY
    assert "northcentralus" in message and "swedencentral" in message and "eastus" in message
    assert "training_type=GlobalStandard" in message
    # the service's own answer is the misleading one the issue quotes: a raw call without trainingType
    route = provider._route("openai")
    with pytest.raises(openai.BadRequestError) as refused:
        route.client.with_options(max_retries=0).fine_tuning.jobs.create(model="gpt-4.1-mini", training_file="file-x")
    assert "does not support fine-tuning" in str(refused.value)
    # o4-mini has no Developer training (issue 19: it does train Globally, reinforcement only)
    other, _ = _provider(azure_emulator, "o4-mini", training_type="developerTier")
    with pytest.raises(errors.CapabilityError) as caught:
        other.plan(FineTuneSpec(provider="azure", base_model="o4-mini", training_file=training_file,
                                method="reinforcement"))
    assert "no developerTier training" in str(caught.value)


def test_a_dated_api_version_gets_no_fields_it_does_not_define_and_jobs_are_found_by_file_name(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    import openai

    provider, time = _provider(azure_emulator, "gpt-4o-mini-2024-07-18", api_version="2024-10-21")
    route = provider._route("openai")
    # the emulator enforces the 2024-10-21 schema: no method / metadata / trainingType
    with pytest.raises(openai.BadRequestError) as refused:
        route.client.with_options(max_retries=0).fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file="file-x", metadata={"a": "b"})
    assert "metadata" in str(refused.value)
    run_id = _run_id()
    file_id = _upload(provider, tmp_path, training_file, run_id)
    spec = FineTuneSpec(provider="azure", base_model="gpt-4o-mini-2024-07-18", training_file=training_file)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id)
    assert _job(azure_emulator, job.id)["training_type"] == "Standard"
    assert [j.id for j in provider.find_jobs(run_id)] == [job.id]  # no metadata: the file name is the tag
    assert provider.find_jobs(_run_id()) == []
    with pytest.raises(errors.UnsupportedOperation):
        provider.pause_job(job.id)
    provider.cancel_job(job.id)


def test_a_system_pause_of_a_developer_tier_job_is_progress(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    provider, time = _provider(azure_emulator, "gpt-4.1-nano", training_type="developerTier")
    run_id = _run_id()
    file_id = _upload(provider, tmp_path, training_file, run_id)
    spec = FineTuneSpec(provider="azure", base_model="gpt-4.1-nano", training_file=training_file)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id)
    time.sleep(4.0 + 6.0 * 5 / 11 + 1.0)  # validating + queued + half the steps: inside the service's pause
    assert provider.get_job(job.id).provider_status == "paused"
    assert provider.resume_job(job.id).state == JobState.PAUSED  # the service resumes it; asking is no failure
    seen: list[str] = []
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=time.sleep, clock=time.clock,
                                on_job=lambda j: seen.append(str(j.provider_status)))
    assert final.state == JobState.SUCCEEDED and final.fine_tuned_model
    statuses = [e["message"] for e in _job(azure_emulator, job.id)["events"]]
    assert any("paused by the service" in m for m in statuses), statuses
    assert provider.map_status("pausing") == JobState.PAUSED and provider.map_status("resuming") == JobState.RUNNING
    provider.delete_model(final.fine_tuned_model)


def test_user_pause_and_resume_on_v1(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path,
                                     tmp_path: Path) -> None:
    provider, time = _provider(azure_emulator, "gpt-4o-mini")
    run_id = _run_id()
    file_id = _upload(provider, tmp_path, training_file, run_id)
    job = provider.create_job(FineTuneSpec(provider="azure", base_model="gpt-4o-mini", training_file=training_file),
                              training_file_id=file_id, validation_file_id=None, run_id=run_id)
    time.sleep(5.0)  # validating 2 s + queued 2 s in the emulator's timeline
    assert provider.get_job(job.id).state == JobState.RUNNING
    assert provider.pause_job(job.id).state == JobState.PAUSED
    time.sleep(60.0)
    assert provider.get_job(job.id).state == JobState.PAUSED  # a user pause holds
    assert provider.resume_job(job.id).state == JobState.RUNNING
    provider.cancel_job(job.id)


def _trained(emulator: AzureEmulator, base: str, training: Path, tmp_path: Path, **options: object):
    provider, time = _provider(emulator, base, **options)
    run_id = _run_id()
    file_id = _upload(provider, tmp_path, training, run_id)
    job = provider.create_job(FineTuneSpec(provider="azure", base_model=base, training_file=training),
                              training_file_id=file_id, validation_file_id=None, run_id=run_id)
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
    assert final.state == JobState.SUCCEEDED
    return provider, time, final


def test_default_sku_follows_model_and_region_and_standard_is_refused_where_it_is_not_offered(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    provider, time, job = _trained(azure_emulator, "gpt-4.1-mini", training_file, tmp_path)
    name = "sku-" + uuid.uuid4().hex[:6]
    run_id = _run_id()
    deployed = provider.deploy(job.fine_tuned_model, name=name, run_id=run_id)
    assert deployed.details["sku"] == "Standard"
    assert any("Standard" in n and "swedencentral" in n for n in deployed.details["notes"])
    assert any("$1.70/hour" in n for n in deployed.details["notes"])
    again = provider.get_deployment(name)
    assert getattr(again, "run_id", None) in (run_id, None) and again.model == job.fine_tuned_model
    with azure_emulator.app.lock:
        assert azure_emulator.app.store.cs_deployments[("ct-aoai", name)]["tags"]["cloudtune-run"] == run_id
    provider.undeploy(name)
    poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    provider.delete_model(job.fine_tuned_model)

    east, time, job = _trained(azure_emulator, "gpt-4.1-mini", training_file, tmp_path, **EASTUS)
    name = "sku-" + uuid.uuid4().hex[:6]
    deployed = east.deploy(job.fine_tuned_model, name=name)
    assert deployed.details["sku"] == "GlobalStandard"
    assert any("only in northcentralus, swedencentral" in n and "in eastus" in n for n in deployed.details["notes"])
    with pytest.raises(errors.CapabilityError):
        east.deploy(job.fine_tuned_model, name="std-" + name, options=DeployOptions(sku="Standard"))
    from providers.azure._settings import CS_API_VERSION

    route = east._route("openai")
    with pytest.raises(errors.InvalidInput):  # ARM itself refuses a regional Standard deployment there
        try:
            route.arm.request("PUT", route._deployments_path("raw-" + name), CS_API_VERSION,
                              {"sku": {"name": "Standard", "capacity": 1},
                               "properties": {"model": {"format": "OpenAI", "name": job.fine_tuned_model, "version": "1"}}})
        except Exception as exc:  # noqa: BLE001 - translated the provider's way
            raise east.translate_error(exc) from exc
    east.undeploy(name)
    poller.wait_for_deployment(east, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    east.delete_model(job.fine_tuned_model)


def test_a_checkpoint_deploys_like_a_model(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path,
                                           tmp_path: Path) -> None:
    provider, time, job = _trained(azure_emulator, "gpt-4o-mini", training_file, tmp_path)
    checkpoints = provider.list_checkpoints(job.id)
    assert len(checkpoints) == 3  # the last three epochs
    checkpoint = checkpoints[0].id
    assert checkpoint.startswith("ftchkpt-")
    name = "ckpt-" + uuid.uuid4().hex[:6]
    deployed = provider.deploy(checkpoint, name=name)
    assert deployed.model == checkpoint
    ready = poller.wait_for_deployment(provider, name, target="ready", timeout_s=600, sleep=time.sleep, clock=time.clock)
    assert ready.state == DeploymentState.READY
    assert provider.chat(name, [{"role": "user", "content": "hi"}]).content
    import openai

    with pytest.raises(openai.ConflictError):  # the job's model cannot go while its checkpoint is deployed
        provider._route("openai").delete_model(job.fine_tuned_model)
    provider.undeploy(name)
    poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    provider.delete_model(job.fine_tuned_model)


def test_model_delete_uses_the_documented_job_delete_and_a_missing_model_is_not_found(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    provider, _, job = _trained(azure_emulator, "gpt-4o-mini", training_file, tmp_path)
    before = len(azure_emulator.app.request_log)
    provider.delete_model(job.fine_tuned_model)
    sent = azure_emulator.app.request_log[before:]
    # the dated surface (it answers 404 without an api-version; the v1 surface has no such DELETE)
    assert f"DELETE /openai/fine_tuning/jobs/{job.id}" in sent, sent
    assert job.fine_tuned_model not in azure_emulator.app.store.summary()["fine_tuned_models"]
    provider.delete_model(job.fine_tuned_model)  # already gone: success by default
    with pytest.raises(errors.NotFound) as caught:  # `cloudtune delete-model typo` must fail
        provider.delete_model("gpt-4o-mini-2024-07-18.ft-" + "0" * 32, missing_ok=False)
    assert "does not exist" in str(caught.value)
