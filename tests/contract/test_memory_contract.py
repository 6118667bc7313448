"""The contract suite against the in-memory provider of the core tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudtune.types import FineTuneSpec
from cloudtune.testing import ContractEnv, ProviderContract
from tests.support.memory_provider import MemoryProvider


@pytest.fixture
def contract_env(tmp_path: Path) -> ContractEnv:
    training = tmp_path / "train.jsonl"
    training.write_text('{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n')
    provider = MemoryProvider({}, sleep=lambda s: None)
    return ContractEnv(
        provider=provider,
        base_model="base-model",
        training_file=training,
        make_spec=lambda **kw: FineTuneSpec(provider="memory", base_model="base-model", training_file=training, **kw),
        wait_timeout_s=60,
        sleep=lambda s: None,
        clock=iter(range(10**6)).__next__,
        force_status=provider.force,
        model_exists=provider.model_exists,
        refuses_delete_while_deployed=True,
    )


class TestMemoryContract(ProviderContract):
    pass
