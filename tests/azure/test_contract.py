"""The shared provider contract, unchanged, against the Azure provider on both routes, driving the
real ``openai`` and ``azure-ai-ml`` SDKs through the emulator's HTTPS proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.emulators.azure import AzureEmulator
from cloudtune.types import FineTuneSpec
from providers.azure import AzureProvider
from providers.azure._serverless_route import parse_asset
from tests.azure.conftest import EmulatedTime
from cloudtune.testing import ContractEnv, ProviderContract


def _force(emulator: AzureEmulator):  # type: ignore[no-untyped-def]
    def force(job_id: str, raw: str) -> None:
        with emulator.app.lock:
            emulator.app.store.forced_status[job_id] = raw
    return force


def _env(emulator: AzureEmulator, training: Path, base_model: str, model_exists) -> ContractEnv:  # type: ignore[no-untyped-def]
    time = EmulatedTime(emulator)
    provider = AzureProvider({"base_model": base_model}, sleep=time.sleep, clock=time.clock)
    return ContractEnv(
        provider=provider, base_model=base_model, training_file=training,
        make_spec=lambda **kw: FineTuneSpec(provider="azure", base_model=base_model, training_file=training, **kw),
        wait_timeout_s=3600, sleep=time.sleep, clock=time.clock, force_status=_force(emulator),
        model_exists=model_exists, refuses_delete_while_deployed=True,
    )


@pytest.fixture
def aoai_env(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> ContractEnv:
    def model_exists(model: str) -> bool:
        with azure_emulator.app.lock:
            item = azure_emulator.app.store.ft_models.get(model)
            return item is not None and not item.get("deleted")

    return _env(azure_emulator, training_file, "gpt-4o-mini-2024-07-18", model_exists)


@pytest.fixture
def serverless_env(azure_emulator: AzureEmulator, azure_env: dict, training_file: Path) -> ContractEnv:
    def model_exists(model: str) -> bool:
        name, version = parse_asset(model)
        with azure_emulator.app.lock:
            return any(n == name and v == version for (_, n, v) in azure_emulator.app.store.models)

    return _env(azure_emulator, training_file, "Phi-4-mini-instruct", model_exists)


class TestAzureOpenAIContract(ProviderContract):
    @pytest.fixture
    def contract_env(self, aoai_env: ContractEnv) -> ContractEnv:
        return aoai_env


class TestAzureServerlessContract(ProviderContract):
    @pytest.fixture
    def contract_env(self, serverless_env: ContractEnv) -> ContractEnv:
        return serverless_env


def test_an_azure_openai_upload_whose_answer_was_lost_is_found(aoai_env: ContractEnv,
                                                               azure_emulator: AzureEmulator) -> None:
    provider = aoai_env.provider
    before = azure_emulator.app.clock.now()
    file_id = provider.upload_file(aoai_env.training_file)
    assert provider.find_uploaded(aoai_env.training_file, since=before) == file_id
    assert provider.find_uploaded(aoai_env.training_file, since=before + 3600) is None
    provider.delete_file(file_id)
    assert provider.find_uploaded(aoai_env.training_file, since=before) != file_id  # a deleted file is never adopted
