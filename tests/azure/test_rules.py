"""Service rules of the Azure emulator as the provider meets them through the real SDKs, plus the
provider's routing, status and error tables."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.emulators._http import Fault
from cloudtune.emulators.azure import AzureEmulator
from cloudtune.types import DeploymentState, FineTuneSpec, JobState
from providers.azure import AzureProvider
from tests.azure.conftest import EmulatedTime


def _provider(emulator: AzureEmulator, base_model: str, **options: object) -> tuple[AzureProvider, EmulatedTime]:
    time = EmulatedTime(emulator)
    return AzureProvider({"base_model": base_model, **options}, sleep=time.sleep, clock=time.clock), time


def _fine_tuned_model(provider: AzureProvider, time: EmulatedTime, training: Path, base_model: str) -> str:
    file_id = provider.upload_file(training)
    spec = FineTuneSpec(provider="azure", base_model=base_model, training_file=training)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=uuid.uuid4().hex)
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
    assert final.state == JobState.SUCCEEDED and final.fine_tuned_model
    return final.fine_tuned_model


def test_at_most_five_fine_tuned_deployments(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    provider, time = _provider(azure_emulator, "gpt-4o-mini-2024-07-18")
    model = _fine_tuned_model(provider, time, training_file, "gpt-4o-mini-2024-07-18")
    names = [f"q{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    try:
        for name in names[:5]:
            assert provider.deploy(model, name=name).state == DeploymentState.CREATING
        with pytest.raises(errors.QuotaExceeded) as caught:
            provider.deploy(model, name=names[5])
        assert caught.value.exit_code == errors.EXIT_CAPABILITY
        assert "5" in str(caught.value)
    finally:
        for name in names:
            provider.undeploy(name)
        for name in names:
            poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
        provider.delete_model(model)


def test_delete_of_a_deployed_model_is_refused_by_the_service_and_reported_first_by_the_provider(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    import openai

    provider, time = _provider(azure_emulator, "gpt-4o-mini-2024-07-18")
    model = _fine_tuned_model(provider, time, training_file, "gpt-4o-mini-2024-07-18")
    name = "held-" + uuid.uuid4().hex[:6]
    provider.deploy(model, name=name)
    route = provider._route("openai")
    job_id = "ftjob-" + model.split(".ft-", 1)[1]
    with pytest.raises(openai.ConflictError):  # the service's own rule: 409 (on the documented delete call)
        route._dated_client("2024-10-21").with_options(max_retries=0).delete(f"/fine_tuning/jobs/{job_id}", cast_to=object)
    requests_before = len(azure_emulator.app.request_log)
    with pytest.raises(errors.Conflict) as caught:
        provider.delete_model(model)
    assert name in str(caught.value) and "Nothing was deleted" in str(caught.value)
    assert not any(line.startswith("DELETE") for line in azure_emulator.app.request_log[requests_before:])
    provider.undeploy(name)
    # while the deployment is still being deleted the model counts as deployed
    assert provider.get_deployment(name).state == DeploymentState.DELETING
    with pytest.raises(errors.Conflict):
        provider.delete_model(model)
    poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    provider.delete_model(model)


def test_marketplace_subscription_missing_stops_before_upload(azure_emulator: AzureEmulator, azure_env: dict,
                                                              training_file: Path) -> None:
    provider, _ = _provider(azure_emulator, "Ministral-3B")
    before = azure_emulator.app.store.summary()["data_assets"]
    with pytest.raises(errors.CapabilityError) as caught:
        provider.upload_file(training_file)
    assert caught.value.code == "MarketplaceSubscriptionMissing"
    assert azure_emulator.app.store.summary()["data_assets"] == before

    consenting, _ = _provider(azure_emulator, "Ministral-3B", accept_marketplace_terms=True)
    file_id = consenting.upload_file(training_file)
    assert file_id.startswith("azureml:")
    assert any("ministral-3b" in s for s in azure_emulator.app.store.summary()["marketplace_subscriptions"])
    consenting.delete_file(file_id)


def test_a_project_that_is_not_hub_based_is_refused(azure_emulator: AzureEmulator, azure_env: dict,
                                                    training_file: Path) -> None:
    provider, _ = _provider(azure_emulator, "Phi-4-mini-instruct", project="ct-workspace")
    with pytest.raises(errors.CapabilityError) as caught:
        provider.upload_file(training_file)
    assert "hub-based" in str(caught.value)
    result = provider.check()
    assert not result.ok and any("hub-based" in p for p in result.problems)


def test_wrong_region_names_the_regions_that_work(azure_emulator: AzureEmulator, azure_env: dict) -> None:
    provider, _ = _provider(azure_emulator, "Phi-4-mini-instruct", project="ct-project-weu")
    result = provider.check()
    assert not result.ok and any("eastus2" in p and "westeurope" in p for p in result.problems)


def test_injected_faults_become_transient_errors(azure_emulator: AzureEmulator, azure_env: dict) -> None:
    provider, _ = _provider(azure_emulator, "gpt-4o-mini-2024-07-18")
    fault = azure_emulator.app.faults.add(Fault(route=r"GET /openai/v1/fine_tuning/jobs/ftjob-0+$", status=429,
                                                retry_after=0.01, times=-1))
    try:
        with pytest.raises(errors.RateLimited) as caught:
            provider.get_job("ftjob-" + "0" * 32)
        assert caught.value.retry_after == pytest.approx(0.01)
    finally:
        fault.times = 0
    azure_emulator.app.faults.add(Fault(route=r"GET .*/deployments$", status=503, retry_after=0.01, times=4))
    with pytest.raises(errors.TransientError):
        provider.list_deployments()


def test_secrets_do_not_leak(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    provider, time = _provider(azure_emulator, "Phi-4-mini-instruct")
    model = _fine_tuned_model(provider, time, training_file, "Phi-4-mini-instruct")
    name = "leak-" + uuid.uuid4().hex[:6]
    provider.deploy(model, name=name)
    ready = poller.wait_for_deployment(provider, name, target="ready", timeout_s=600, sleep=time.sleep, clock=time.clock)
    answer = provider.chat(name, [{"role": "user", "content": "hi"}])
    keys = next(e["keys"] for (_, n), e in azure_emulator.app.store.endpoints.items() if n == name)
    dumped = ready.model_dump_json() + answer.model_dump_json() + repr(provider.check())
    assert keys["primaryKey"] not in dumped and keys["secondaryKey"] not in dumped
    provider.undeploy(name)
    poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
    provider.delete_model(model)


def test_route_selection_and_status_table() -> None:
    provider = AzureProvider({"base_model": "Phi-4"})
    assert provider.route_name() == "serverless"
    assert provider.route_name("ftjob-" + "a" * 32) == "openai"
    assert provider.route_name("gpt-4o-mini-2024-07-18.ft-" + "b" * 32 + "-mine") == "openai"
    assert AzureProvider({"base_model": "gpt-4.1-mini"}).route_name("azureml:m:1") == "serverless"
    assert AzureProvider({"base_model": "gpt-4.1-mini"}).route_name("job-that-does-not-exist") == "openai"
    assert AzureProvider({"base_model": "gpt-4.1", "route": "serverless"}).route_name() == "serverless"
    table = {"pending": JobState.VALIDATING, "notRunning": JobState.QUEUED, "running": JobState.RUNNING,
             "succeeded": JobState.SUCCEEDED, "cancelled": JobState.CANCELLED, "NotStarted": JobState.QUEUED,
             "Completed": JobState.SUCCEEDED, "Canceled": JobState.CANCELLED, "NotResponding": JobState.UNKNOWN,
             None: JobState.UNKNOWN}
    for raw, state in table.items():
        assert provider.map_status(raw) == state, raw


def test_azure_nulls_are_handled() -> None:
    from types import SimpleNamespace

    from providers.azure._openai_route import OpenAIRoute
    from providers.azure._settings import Settings

    route = OpenAIRoute(Settings({}), AzureProvider().map_status, lambda s: None)
    raw = SimpleNamespace(id="ftjob-x", status="notRunning", model="gpt-4o-mini", fine_tuned_model=None, created_at=None,
                          finished_at=0, trained_tokens=None, metadata=None, error={"code": None, "message": None},
                          estimated_finish=None)
    job = route.to_job(raw)
    assert job.state == JobState.QUEUED and job.error is None and job.created_at is None and job.finished_at is None


def test_unknown_routes_answer_404_naming_the_path(azure_emulator: AzureEmulator, azure_env: dict) -> None:
    import requests

    response = requests.get("https://management.azure.com/subscriptions/x/nothing-here", timeout=10)
    assert response.status_code == 404 and "/subscriptions/x/nothing-here" in response.text
    assert any("nothing-here" in r for r in azure_emulator.app.store.unknown_routes)
    azure_emulator.app.store.unknown_routes.clear()


def test_deployment_sku_comes_from_deploy_options_then_the_provider_option(azure_emulator: AzureEmulator, azure_env: dict,
                                                                         training_file: Path) -> None:
    from cloudtune.types import DeployOptions

    provider, time = _provider(azure_emulator, "gpt-4.1-mini", deployment_sku="developertier")
    model = _fine_tuned_model(provider, time, training_file, "gpt-4.1-mini")
    first, second = "sku-a-" + uuid.uuid4().hex[:4], "sku-b-" + uuid.uuid4().hex[:4]
    deployed = provider.deploy(model, name=first)
    assert deployed.details["sku"] == "DeveloperTier"  # ARM's name, whatever the case it was given in
    assert any("24 hours" in note and "15 days" in note for note in deployed.details["notes"])
    assert any("no hourly hosting fee" in note for note in deployed.details["notes"])
    assert provider.deploy(model, name=second, options=DeployOptions(sku="GlobalStandard")).details["sku"] == "GlobalStandard"
    for wrong in ("Premium", "Developer"):  # "Developer" is the portal's label, not ARM's sku name
        with pytest.raises(errors.CapabilityError) as caught:
            provider.deploy(model, name="sku-c", options=DeployOptions(sku=wrong))
        assert "DeveloperTier" in str(caught.value) and caught.value.exit_code == errors.EXIT_CAPABILITY
    for name in (first, second):
        provider.undeploy(name)
        poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)
