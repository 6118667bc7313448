"""The shared provider contract, unchanged, against OpenAIProvider + the OpenAI emulator over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.types import FineTuneSpec
from cloudtune.testing import ContractEnv, ProviderContract
from tests.openai.conftest import BASE_MODEL, Emulated


@pytest.fixture
def contract_env(emulated: Emulated, provider, training_file: Path) -> ContractEnv:  # type: ignore[no-untyped-def]
    return ContractEnv(
        provider=provider,
        base_model=BASE_MODEL,
        training_file=training_file,
        make_spec=lambda **kw: FineTuneSpec(provider="openai", base_model=BASE_MODEL, training_file=training_file, **kw),
        wait_timeout_s=3600,
        sleep=emulated.sleep,
        clock=emulated.clock.now,
        force_status=lambda job_id, status: emulated.app.force_status(job_id, status),
        model_exists=lambda model: model in emulated.app.models,
        refuses_delete_while_deployed=False,  # OpenAI deletes a model whatever names point at it
    )


class TestOpenAIContract(ProviderContract):
    pass
