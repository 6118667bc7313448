"""The provider contract, written once (as fsspec ships its abstract tests), for every provider:
the built-in ones and third-party plugins alike. Needs pytest.

A provider's test module supplies a ``contract_env`` fixture returning a :class:`ContractEnv` and
declares ``class TestXContract(ProviderContract): pass``::

    from cloudtune.testing import ContractEnv, ProviderContract

This module must not be changed to make a provider pass.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.provider import Provider
from cloudtune.provider_facts import Operation, ProviderFacts, ProviderOptions
from cloudtune.types import (
    ChatResult,
    CheckResult,
    Deployment,
    DeploymentState,
    FineTuneSpec,
    Job,
    JobEvent,
    JobState,
    can_transition,
)


@dataclass
class ContractEnv:
    provider: Provider
    base_model: str
    training_file: Path
    make_spec: Callable[..., FineTuneSpec]
    wait_timeout_s: float
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    force_status: Callable[[str, str], None]
    model_exists: Callable[[str], bool]
    refuses_delete_while_deployed: bool


def _run_id() -> str:
    return "contract-" + uuid.uuid4().hex[:10]


def _create(env: ContractEnv, run_id: str | None = None) -> tuple[Job, str]:
    file_id = env.provider.upload_file(env.training_file)
    assert isinstance(file_id, str) and file_id
    spec = env.make_spec()
    job = env.provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id=run_id or _run_id())
    assert isinstance(job, Job)
    return job, file_id


def _wait(env: ContractEnv, job_id: str, **kw) -> Job:  # type: ignore[no-untyped-def]
    return poller.wait_for_job(env.provider, job_id, timeout_s=env.wait_timeout_s, sleep=env.sleep, clock=env.clock, **kw)


def _wait_deployment(env: ContractEnv, name: str, target: str) -> Deployment | None:
    return poller.wait_for_deployment(
        env.provider, name, target=target, timeout_s=env.wait_timeout_s, sleep=env.sleep, clock=env.clock
    )


class ProviderContract:
    def test_check_reports_a_result(self, contract_env: ContractEnv) -> None:
        result = contract_env.provider.check()
        assert isinstance(result, CheckResult)
        assert result.provider == contract_env.provider.name
        assert result.sdk_installed is True
        assert result.ok is True, result.problems

    def test_full_lifecycle_then_nothing_left(self, contract_env: ContractEnv) -> None:
        env, provider = contract_env, contract_env.provider
        run_id = _run_id()
        job, file_id = _create(env, run_id)
        assert job.provider == provider.name
        assert job.state != JobState.UNKNOWN or job.provider_status
        assert [found.id for found in provider.find_jobs(run_id)] == [job.id]

        seen_states = [job.state]
        events: list[JobEvent] = []
        final = _wait(env, job.id, on_job=lambda j: seen_states.append(j.state), on_event=events.append)
        assert final.state == JobState.SUCCEEDED, final.error
        assert final.fine_tuned_model
        for before, after in zip(seen_states, seen_states[1:]):
            assert can_transition(before, after), (before, after)

        # events: oldest first, each once, and the cursor excludes what was seen
        ids = [event.id for event in events]
        assert events and len(ids) == len(set(ids))
        stamps = [event.created_at for event in events]
        assert stamps == sorted(stamps)
        assert provider.list_events(job.id, after=ids[-1]) == []
        assert [e.id for e in provider.list_events(job.id, after=ids[0])][:1] == ids[1:2]
        assert isinstance(provider.list_checkpoints(job.id), list)

        model = final.fine_tuned_model
        name = "ct-" + uuid.uuid4().hex[:8]
        deployment = provider.deploy(model, name=name)
        assert deployment.model == model
        ready = _wait_deployment(env, deployment.name, "ready")
        assert ready is not None and ready.state == DeploymentState.READY
        assert deployment.name in [d.name for d in provider.list_deployments(model)]
        # deploying again is idempotent (resume relies on it)
        again = provider.deploy(model, name=deployment.name)
        assert again.name == deployment.name

        answer = provider.chat(deployment.name, [{"role": "user", "content": "Say hi."}], max_tokens=16)
        assert isinstance(answer, ChatResult) and answer.content.strip()
        dumped = json.dumps([ready.model_dump(mode="json"), answer.model_dump(mode="json")])
        for secret_word in ("api_key", "apikey", "secret", "primaryKey", "Bearer "):
            assert secret_word not in dumped

        provider.undeploy(deployment.name)
        assert _wait_deployment(env, deployment.name, "deleted") is None
        with pytest.raises(errors.NotFound):
            provider.get_deployment(deployment.name)
        assert deployment.name not in [d.name for d in provider.list_deployments(model)]

        assert env.model_exists(model)
        provider.delete_model(model)
        assert not env.model_exists(model)
        provider.delete_model(model)  # already gone: success
        provider.delete_file(file_id)
        provider.delete_file(file_id)

    def test_cancel_ends_the_job_cancelled(self, contract_env: ContractEnv) -> None:
        job, _ = _create(contract_env)
        cancelled = contract_env.provider.cancel_job(job.id)
        assert cancelled.id == job.id
        final = _wait(contract_env, job.id)
        assert final.state == JobState.CANCELLED
        with pytest.raises(errors.JobFailed):
            _wait(contract_env, job.id, raise_on_failure=True)

    def test_unknown_provider_status_maps_to_unknown(self, contract_env: ContractEnv) -> None:
        provider = contract_env.provider
        assert provider.map_status("a-status-nobody-has-invented-yet") == JobState.UNKNOWN
        assert provider.map_status(None) == JobState.UNKNOWN
        job, _ = _create(contract_env)
        contract_env.force_status(job.id, "a-status-nobody-has-invented-yet")
        seen = provider.get_job(job.id)
        assert seen.state == JobState.UNKNOWN
        assert seen.provider_status == "a-status-nobody-has-invented-yet"
        provider.cancel_job(job.id)

    def test_not_found_is_translated(self, contract_env: ContractEnv) -> None:
        provider = contract_env.provider
        with pytest.raises(errors.NotFound) as caught:
            provider.get_job("job-that-does-not-exist-" + uuid.uuid4().hex[:6])
        assert isinstance(caught.value, LookupError)
        assert caught.value.provider == provider.name
        with pytest.raises(errors.NotFound):
            provider.get_deployment("deployment-that-does-not-exist")
        assert provider.find_jobs("run-that-never-was") == []

    def test_deletes_are_idempotent(self, contract_env: ContractEnv) -> None:
        provider = contract_env.provider
        assert provider.delete_file("file-that-does-not-exist") is None
        assert provider.undeploy("deployment-that-does-not-exist") is None
        assert provider.delete_model("model-that-does-not-exist") is None

    def test_delete_model_while_deployed_follows_the_declared_rule(self, contract_env: ContractEnv) -> None:
        env, provider = contract_env, contract_env.provider
        job, _ = _create(env)
        model = _wait(env, job.id).fine_tuned_model
        assert model
        name = "ct-" + uuid.uuid4().hex[:8]
        provider.deploy(model, name=name)
        _wait_deployment(env, name, "ready")
        if env.refuses_delete_while_deployed:
            with pytest.raises(errors.Conflict):
                provider.delete_model(model)
            assert env.model_exists(model)
            provider.undeploy(name)
            _wait_deployment(env, name, "deleted")
            provider.delete_model(model)
        else:
            provider.delete_model(model)
            provider.undeploy(name)
            _wait_deployment(env, name, "deleted")
        assert not env.model_exists(model)

    def test_declared_unsupported_operations_raise_clearly(self, contract_env: ContractEnv) -> None:
        provider = contract_env.provider
        for operation, reason in provider.unsupported.items():
            with pytest.raises(errors.UnsupportedOperation) as caught:
                getattr(provider, operation)("x")
            assert reason in str(caught.value)
            assert caught.value.exit_code == errors.EXIT_CAPABILITY

    def test_declared_facts_are_well_formed(self, contract_env: ContractEnv) -> None:
        cls = type(contract_env.provider)
        facts = cls.facts
        assert isinstance(facts, ProviderFacts)
        assert facts.request_concurrency >= 1
        assert facts.data_rules.bom in ("required", "accepted", "refused")
        assert facts.data_rules.min_examples >= 1
        for info in facts.models:
            assert info.name and (info.context_tokens is None or info.context_tokens > 0)
            assert info.price_per_1m_training_tokens is None or info.price_date, f"{info.name}: a price needs its date"
        assert issubclass(cls.Options, ProviderOptions)
        assert all(isinstance(help_text, str) and help_text for help_text in cls.option_names.values())
        for operation in cls.unsupported:
            assert Operation(operation), f"{operation!r} is not an operation of the interface"
