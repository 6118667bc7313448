"""Issue 19: the Azure rules as Microsoft's docs gave them in 2026 (deployment regions, developer training,
o4-mini's RFT-only, retired serverless models, Data Zone, retirements, the Entra scope, open-weight models on
Foundry resources), through the real SDKs against the emulator, which refuses what the service refuses."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.emulators.azure import AzureEmulator
from cloudtune.service_facts import azure_openai as rules
from cloudtune.service_facts import azure_serverless
from cloudtune.types import DeployOptions, FineTuneSpec, JobState
from providers.azure import AzureProvider
from tests.azure.conftest import EmulatedTime

NCUS = {"endpoint": "https://ct-aoai-ncus.openai.azure.com", "account": "ct-aoai-ncus"}
FOUNDRY = {"endpoint": "https://ct-foundry.services.ai.azure.com", "account": "ct-foundry"}


def _provider(emulator: AzureEmulator, base: str, **options: object) -> tuple[AzureProvider, EmulatedTime]:
    time = EmulatedTime(emulator)
    return AzureProvider({"base_model": base, **options}, sleep=time.sleep, clock=time.clock), time


def _spec(model: str, training: Path, **fields: object) -> FineTuneSpec:
    return FineTuneSpec(provider="azure", base_model=model, training_file=training, **fields)


def _train(emulator: AzureEmulator, base: str, training: Path, tmp_path: Path, **options: object):
    from cloudtune.ledger import new_run_id

    provider, time = _provider(emulator, base, **options)
    run_id = new_run_id()
    copy = tmp_path / f"ct-{run_id}-training.jsonl"
    copy.write_bytes(training.read_bytes())
    provider.plan(_spec(base, training))
    job = provider.create_job(_spec(base, training), training_file_id=provider.upload_file(copy),
                              validation_file_id=None, run_id=run_id)
    final = poller.wait_for_job(provider, job.id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
    assert final.state == JobState.SUCCEEDED
    return provider, time, final


def test_standard_deployments_follow_the_deployment_table_not_the_training_regions(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    # gpt-4o trains Standard in North Central US, but its fine-tunes do not deploy Standard there
    assert "northcentralus" in rules.base_model("gpt-4o").standard_regions
    provider, time, job = _train(azure_emulator, "gpt-4o", training_file, tmp_path, **NCUS)
    sku, why = provider._route("openai").choose_sku(job.fine_tuned_model, None, None)
    assert sku == "GlobalStandard" and "eastus2, swedencentral" in why and "northcentralus" in why
    with pytest.raises(errors.CapabilityError) as caught:  # refused before ARM is asked
        provider.deploy(job.fine_tuned_model, name="std-" + uuid.uuid4().hex[:6], options=DeployOptions(sku="Standard"))
    assert "eastus2, swedencentral" in str(caught.value)
    from providers.azure._settings import CS_API_VERSION

    route = provider._route("openai")
    with pytest.raises(errors.InvalidInput):  # and ARM (the emulator) refuses the same request
        try:
            route.arm.request("PUT", route._deployments_path("raw-" + uuid.uuid4().hex[:6]), CS_API_VERSION,
                              {"sku": {"name": "Standard", "capacity": 1},
                               "properties": {"model": {"format": "OpenAI", "name": job.fine_tuned_model, "version": "1"}}})
        except Exception as exc:  # noqa: BLE001 - translated the provider's way
            raise provider.translate_error(exc) from exc
    # ProvisionedManaged only where the PTU table says; DeveloperTier is not offered for gpt-4o
    assert rules.deployment_refusal("gpt-4o", "ProvisionedManaged", "northcentralus") is None
    assert rules.deployment_refusal("gpt-4.1", "ProvisionedManaged", "northcentralus") is not None
    assert rules.deployment_refusal("gpt-4.1-mini", "ProvisionedManaged", "swedencentral") is not None
    assert rules.deployment_refusal("gpt-4o", "DeveloperTier", "swedencentral") is not None
    provider.delete_model(job.fine_tuned_model)


def test_developer_training_for_gpt_4o_mini_is_accepted(azure_emulator: AzureEmulator, azure_env: dict,
                                                        training_file: Path, tmp_path: Path) -> None:
    provider, _, job = _train(azure_emulator, "gpt-4o-mini", training_file, tmp_path, training_type="developerTier")
    assert job.fine_tuned_model.startswith("gpt-4o-mini-2024-07-18.ft-")
    provider.delete_model(job.fine_tuned_model)
    assert rules.training_refusal("gpt-4o", "developerTier", "swedencentral") is None
    assert rules.training_refusal("o4-mini", "developerTier", "swedencentral") is not None


def test_an_o4_mini_supervised_job_is_refused_before_upload_and_by_the_service(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    import openai

    provider, _ = _provider(azure_emulator, "o4-mini")
    before = azure_emulator.app.store.summary()["files"]
    with pytest.raises(errors.CapabilityError) as caught:
        provider.plan(_spec("o4-mini", training_file))
    assert caught.value.exit_code == errors.EXIT_CAPABILITY and caught.value.code == "MethodUnavailable"
    assert "reinforcement" in str(caught.value) and "--method reinforcement" in str(caught.value.hint)
    assert azure_emulator.app.store.summary()["files"] == before
    with pytest.raises(openai.BadRequestError) as refused:  # the service's own refusal of the same request
        provider._route("openai").client.with_options(max_retries=0).fine_tuning.jobs.create(
            model="o4-mini-2025-04-16", training_file="file-x", method={"type": "supervised"},
            extra_body={"trainingType": "GlobalStandard"})
    assert "method" in str(refused.value)
    gpt5 = rules.base_model("gpt-5")
    assert gpt5.methods == ("reinforcement",) and "invitation" in gpt5.gated


def test_a_developer_tier_deployment_of_an_o4_mini_fine_tune_is_accepted(
        azure_emulator: AzureEmulator, azure_env: dict) -> None:
    from cloudtune.emulators.azure._arm_cs import create_deployment

    model = "o4-mini-2025-04-16.ft-" + uuid.uuid4().hex
    name = "dev-" + uuid.uuid4().hex[:6]
    with azure_emulator.app.lock:  # a model trained elsewhere (RFT), deployed in Sweden Central by ARM's rules
        azure_emulator.app.store.ft_models[model] = {"account": "ct-aoai", "job_id": "ftjob-x", "created_at": 0,
                                                     "base": "o4-mini-2025-04-16"}
        dep = create_deployment(azure_emulator.app.store, "ct-aoai", name, model, "DeveloperTier", 1, tags={})
        del azure_emulator.app.store.cs_deployments[("ct-aoai", name)]  # the session's emulator stays clean
        azure_emulator.app.store.ft_models[model]["deleted"] = True
    assert dep["sku"] == "DeveloperTier"
    provider, _ = _provider(azure_emulator, "o4-mini")
    sku, _ = provider._route("openai").choose_sku(model, DeployOptions(sku="developertier"), None)
    assert sku == "DeveloperTier"


def test_retired_serverless_models_are_refused_with_their_successor(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    for model, successor in (("Mistral-Large-2411", "Ministral-3B"),
                             ("Meta-Llama-3.1-8B-Instruct", "Llama-3.3-70B-Instruct"),
                             ("Llama-3.2-11B-Vision-Instruct", "Phi-4-multimodal-instruct"),
                             ("Llama-3.2-90B-Vision-Instruct", "Phi-4-multimodal-instruct"),
                             ("Phi-3-medium-4k-instruct", "Phi-4")):
        provider, _ = _provider(azure_emulator, model)
        with pytest.raises(errors.CapabilityError) as caught:
            provider.plan(_spec(model, training_file))
        assert caught.value.exit_code == errors.EXIT_CAPABILITY and caught.value.code == "ModelRetired"
        assert f"--model {successor}" in str(caught.value.hint)
    assert "Mistral-medium-2505" in str(azure_serverless.retirement("Mistral-Large-2411").suggested)
    assert azure_serverless.refusal("Meta-Llama-3.1-8B-Instruct", "westus3") is not None  # the emulator's rule too


def test_catalog_numbers_and_the_global_training_caveats() -> None:
    from cloudtune.catalog import lookup_model

    assert lookup_model("azure", "gpt-4.1-nano").context_tokens == 32_768
    assert lookup_model("azure", "gpt-4o-mini").methods == ("supervised",)
    assert lookup_model("azure", "gpt-35-turbo") is None
    assert "no longer fine-tunable" in rules.training_refusal("gpt-35-turbo-0125", "GlobalStandard", "swedencentral")
    assert "Poland Central" in rules.training_refusal("gpt-4.1-nano", "GlobalStandard", "polandcentral")
    assert rules.training_refusal("gpt-4.1-mini", "GlobalStandard", "polandcentral") is None
    assert "Vision" in rules.training_refusal("gpt-4o", "GlobalStandard", "japaneast", vision=True)
    assert rules.training_refusal("gpt-4o", "GlobalStandard", "japaneast") is None
    assert "UAE North" in rules.training_refusal("gpt-oss-20b", "GlobalStandard", "uaenorth")


def test_data_zone_training(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, tmp_path: Path) -> None:
    assert rules.canonical_training_type("datazone") == "DataZoneStandard"
    swc, _ = _provider(azure_emulator, "gpt-4.1-mini", training_type="DataZoneStandard")  # Sweden: not in the US zone
    with pytest.raises(errors.CapabilityError) as caught:
        swc.plan(_spec("gpt-4.1-mini", training_file))
    assert "DataZoneStandard" in str(caught.value) and "northcentralus" in str(caught.value)
    provider, _, job = _train(azure_emulator, "gpt-4.1-mini", training_file, tmp_path, training_type="DataZoneStandard",
                              **NCUS)
    with azure_emulator.app.lock:
        assert azure_emulator.app.store.ft_jobs[job.id]["training_type"] == "DataZoneStandard"
    provider.delete_model(job.fine_tuned_model)


def test_retirement_dates_are_shown(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    note = rules.retirement_note("gpt-4.1-mini", date(2026, 11, 25))
    assert "2027-10-14" in note and "2027-04-14" in note and "2026-10-14" in note
    assert "2027-10-01" in rules.retirement_note("gpt-4o-mini", date(2026, 11, 25))
    assert "2027-10-16" in rules.retirement_note("o4-mini", date(2026, 11, 25))
    provider, _ = _provider(azure_emulator, "gpt-4.1-mini")
    assert any("2027-10-14" in n for n in provider.plan(_spec("gpt-4.1-mini", training_file)))


def test_the_v1_surface_uses_the_foundry_scope(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> None:
    provider, _ = _provider(azure_emulator, "gpt-4.1-mini")
    start = len(azure_emulator.app.store.token_audiences)
    provider.list_jobs(1)
    seen = azure_emulator.app.store.token_audiences[start:]
    assert seen and all(aud == "https://ai.azure.com" for path, aud in seen if path.startswith("/openai/v1/"))
    dated, _ = _provider(azure_emulator, "gpt-4.1-mini", api_version="2024-10-21")
    start = len(azure_emulator.app.store.token_audiences)
    dated.list_jobs(1)
    assert {aud for _, aud in azure_emulator.app.store.token_audiences[start:]} == {"https://cognitiveservices.azure.com"}


def test_open_weight_models_need_a_foundry_resource(azure_emulator: AzureEmulator, azure_env: dict,
                                                    training_file: Path, tmp_path: Path) -> None:
    classic, _ = _provider(azure_emulator, "gpt-oss-20b")
    with pytest.raises(errors.CapabilityError) as caught:
        classic.plan(_spec("gpt-oss-20b", training_file))
    assert caught.value.code == "FoundryResourceRequired" and "services.ai.azure.com" in str(caught.value.hint)
    provider, _, job = _train(azure_emulator, "gpt-oss-20b", training_file, tmp_path, **FOUNDRY)
    assert job.fine_tuned_model.startswith("gpt-oss-20b.ft-")


def test_which_route_serves_which_open_weight_model() -> None:
    from providers.azure._capabilities import route_for_model

    assert route_for_model("gpt-oss-20b", has_endpoint=False, has_project=True) == "openai"  # only the jobs API has it
    assert route_for_model("Qwen-32B", has_endpoint=True, has_project=True) == "openai"
    assert route_for_model("Ministral-3B", has_endpoint=True, has_project=True) == "serverless"  # both list it
    assert route_for_model("Ministral-3B", has_endpoint=True, has_project=False) == "openai"
    assert route_for_model("Phi-4-mini-instruct", has_endpoint=True, has_project=False) == "serverless"


def test_an_open_weight_model_without_a_foundry_endpoint_says_what_is_needed(
        azure_emulator: AzureEmulator, azure_env: dict, training_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT")  # a classic hub-based project only
    provider, _ = _provider(azure_emulator, "gpt-oss-20b")
    assert provider.route_name() == "openai"  # the serverless route does not offer it
    with pytest.raises(errors.CapabilityError) as caught:
        provider.plan(_spec("gpt-oss-20b", training_file))
    assert "Foundry resource" in str(caught.value) and "AZURE_OPENAI_ENDPOINT" in str(caught.value.hint)


def test_the_service_refuses_a_retired_serverless_model_too(azure_emulator: AzureEmulator, azure_env: dict,
                                                           training_file: Path) -> None:
    provider, _ = _provider(azure_emulator, "Phi-4-mini-instruct")
    file_id = provider.upload_file(training_file)
    provider._route("serverless")._preflight_done.add("Mistral-Large-2411")  # skip the provider's own check
    jobs = azure_emulator.app.store.summary()["ml_jobs"]
    with pytest.raises(errors.CloudtuneError) as refused:  # the catalog no longer resolves it; no job is made
        provider.create_job(_spec("Mistral-Large-2411", training_file), training_file_id=file_id,
                            validation_file_id=file_id, run_id=uuid.uuid4().hex)
    assert "Mistral-Large-2411" in str(refused.value)
    assert azure_emulator.app.store.summary()["ml_jobs"] == jobs
    from cloudtune.service_facts import azure_serverless as facts

    assert "retired on 2026-01-30" in facts.refusal("Mistral-Large-2411", "eastus2")  # the job route's own answer
    provider.delete_file(file_id)


def test_the_openai_hint_says_until_when_azure_serves() -> None:
    from providers.openai.provider import alternatives

    hint = alternatives("gpt-4.1-nano-2025-04-14")
    assert "--model gpt-4.1-nano-2025-04-14" in hint and "until 2027-10-14" in hint
    assert "--model gpt-4.1-mini-2025-04-14" in alternatives("o4-mini-2025-04-16")  # o4-mini is RFT-only on Azure
