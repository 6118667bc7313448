"""Azure AI Foundry serverless fine-tuning as of November 2026 (issue 10 points 5-6): retired
models, the exact fine-tunable list and regions, the documented request shapes; through azure-ai-ml
and openai against the emulator, which refuses what the service refuses."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.emulators.azure import AzureEmulator
from cloudtune.service_facts import azure_serverless
from cloudtune.types import DeploymentState, FineTuneSpec, JobState
from providers.azure import AzureProvider
from tests.azure.conftest import EmulatedTime


def _provider(emulator: AzureEmulator, base_model: str, **options: object) -> tuple[AzureProvider, EmulatedTime]:
    time = EmulatedTime(emulator)
    return AzureProvider({"base_model": base_model, **options}, sleep=time.sleep, clock=time.clock), time


def _spec(model: str, training: Path) -> FineTuneSpec:
    return FineTuneSpec(provider="azure", base_model=model, training_file=training)


def test_retired_models_stop_before_anything_is_sent(azure_emulator: AzureEmulator, azure_env: dict,
                                                     training_file: Path) -> None:
    before = azure_emulator.app.store.summary()
    for model, successor in (("Phi-3-mini-4k-instruct", "Phi-4-mini-instruct"), ("Phi-3.5-MoE-instruct", "Phi-4-mini-instruct"),
                             ("Meta-Llama-3.1-70B-Instruct", "Llama-3.3-70B-Instruct"), ("Mistral-Nemo", "Ministral-3B")):
        provider, _ = _provider(azure_emulator, model)
        with pytest.raises(errors.CapabilityError) as caught:
            provider.plan(_spec(model, training_file))
        assert caught.value.exit_code == errors.EXIT_CAPABILITY and caught.value.code == "ModelRetired"
        hint = str(caught.value.hint)
        assert f"--model {successor}" in hint and f"--provider local --model {model}" in hint
        assert "in eastus2" in hint  # the project's region
        with pytest.raises(errors.CapabilityError):
            provider.upload_file(training_file)
    after = azure_emulator.app.store.summary()
    assert after["data_assets"] == before["data_assets"] and after["blobs"] == before["blobs"]


def test_the_fine_tunable_list_is_exact_names_not_prefixes() -> None:
    assert azure_serverless.lookup("Phi-4") is not None
    assert azure_serverless.lookup("Phi-4-reasoning") is None
    assert azure_serverless.refusal("Phi-4-mini-reasoning", "eastus2") == "Phi-4-mini-reasoning cannot be fine-tuned"
    assert azure_serverless.lookup("Llama-3.3-70B-Instruct").regions == ("westus3",)
    assert "Phi-4-multimodal-instruct" in [m.name for m in azure_serverless.FINE_TUNABLE]


def test_reasoning_models_and_llama_regions_are_refused_by_provider_and_service(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    reasoning, _ = _provider(azure_emulator, "Phi-4-reasoning")
    with pytest.raises(errors.CapabilityError) as caught:
        reasoning.plan(_spec("Phi-4-reasoning", training_file))
    assert "cannot be fine-tuned" in str(caught.value)
    llama, _ = _provider(azure_emulator, "Llama-3.3-70B-Instruct", accept_marketplace_terms=True)
    with pytest.raises(errors.RegionUnavailable) as caught:
        llama.plan(_spec("Llama-3.3-70B-Instruct", training_file))
    assert "westus3" in str(caught.value) and "eastus2" in str(caught.value)
    # the emulator refuses the same when the provider's own check is skipped
    provider, _ = _provider(azure_emulator, "Phi-4-mini-instruct")
    file_id = provider.upload_file(training_file)
    route = provider._route("serverless")
    route._preflight_done.add("Phi-4-reasoning")
    with pytest.raises(errors.CloudtuneError) as refused:
        provider.create_job(_spec("Phi-4-reasoning", training_file), training_file_id=file_id, validation_file_id=None,
                            run_id=uuid.uuid4().hex)
    assert "cannot be fine-tuned" in str(refused.value)
    provider.delete_file(file_id)


def test_documented_deploy_shape_one_deployment_per_model_and_v1_chat(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    provider, time = _provider(azure_emulator, "Phi-4-mini-instruct")
    file_id = provider.upload_file(training_file)
    job = provider.create_job(_spec("Phi-4-mini-instruct", training_file), training_file_id=file_id,
                              validation_file_id=file_id, run_id=uuid.uuid4().hex)
    from cloudtune.emulators.azure._arm_ml_jobs import _base_model_of

    with azure_emulator.app.lock:  # created from the versioned registry id, resolved through the registry
        body = next(j for (_, n), j in azure_emulator.app.store.ml_jobs.items() if n == job.id)["body"]
    assert _base_model_of(body) == "azureml://registries/azureml/models/Phi-4-mini-instruct/versions/3"
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
    assert final.state == JobState.SUCCEEDED and final.fine_tuned_model
    first, second = "ep-" + uuid.uuid4().hex[:8], "ep-" + uuid.uuid4().hex[:8]
    provider.deploy(final.fine_tuned_model, name=first, run_id="20261125-000000-abcdef")
    with azure_emulator.app.lock:
        endpoint = next(e for (_, n), e in azure_emulator.app.store.endpoints.items() if n == first)
    model_id = endpoint["body"]["properties"]["modelSettings"]["modelId"]
    assert model_id.startswith("azureml://locations/eastus2/workspaces/") and model_id.endswith("/versions/1")
    with pytest.raises(errors.Conflict) as caught:  # one serverless deployment per custom model
        provider.deploy(final.fine_tuned_model, name=second)
    assert "only one" in str(caught.value)
    ready = poller.wait_for_deployment(provider, first, target="ready", timeout_s=600, sleep=time.sleep, clock=time.clock)
    assert ready.state == DeploymentState.READY and ready.model == final.fine_tuned_model
    before = len(azure_emulator.app.request_log)
    assert provider.chat(first, [{"role": "user", "content": "hi"}]).content
    assert "POST /v1/chat/completions" in azure_emulator.app.request_log[before:]
    provider.undeploy(first)
    poller.wait_for_deployment(provider, first, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    provider.delete_model(final.fine_tuned_model)
    provider.delete_file(file_id)
