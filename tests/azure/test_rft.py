"""Issue 19 point 7: reinforcement fine-tuning on Azure OpenAI (o4-mini): the grader file checked locally and
by the service's graders/validate before upload, RFT data and hyperparameters, hourly billing and the
$5,000 pause, through the real ``openai`` SDK against the emulator, which takes RFT's request shapes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.costs import before_upload
from cloudtune.emulators.azure import AzureEmulator
from cloudtune.service_facts import azure_rft
from cloudtune.types import FineTuneSpec, JobState
from providers.azure import AzureProvider
from tests.azure.conftest import EmulatedTime
from tests.support.cli_zygote import run_cloudtune

ROOT = Path(__file__).resolve().parents[2]
STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                "reference": "{{ item.solution }}", "operation": "eq"}
SIMILARITY = {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
              "reference": "{{ item.solution }}", "evaluation_metric": "fuzzy_match"}
SCORE = {"type": "score_model", "name": "judge", "model": "o3-mini-2025-01-31", "range": [0, 1],
         "input": [{"role": "user", "content": "Score {{ sample.output_text }} against {{ item.solution }}"}]}
PYTHON = {"type": "python", "name": "code", "source": "def grade(sample, item):\n    return 1.0\n"}
MULTI = {"type": "multi", "name": "both", "graders": {"exact": STRING_CHECK, "close": SIMILARITY},
         "calculate_output": "(exact + close) / 2"}


def _rft_data(path: Path, rows: int = 12, *, last_role: str = "user", field: str = "solution") -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "developer", "content": "Solve."},
                                                     {"role": last_role, "content": f"{i} + {i} = ?"}],
                                        field: str(2 * i)}) + "\n" for i in range(rows)))
    return path


def _grader_file(path: Path, grader: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(grader) if path.suffix == ".yaml" else json.dumps(grader))
    return path


def _provider(emulator: AzureEmulator, **options: object) -> tuple[AzureProvider, EmulatedTime]:
    time = EmulatedTime(emulator)
    return AzureProvider({"base_model": "o4-mini", **options}, sleep=time.sleep, clock=time.clock), time


def _spec(tmp_path: Path, grader: dict | None = STRING_CHECK, **fields: object) -> FineTuneSpec:
    values = {"training_file": _rft_data(tmp_path / "train.jsonl"), "validation_file": _rft_data(tmp_path / "valid.jsonl", 4),
              "grader_file": _grader_file(tmp_path / "grader.yaml", grader) if grader is not None else None, **fields}
    return FineTuneSpec(provider="azure", base_model="o4-mini", method="reinforcement", **values)


def test_every_documented_grader_type_validates_and_mistakes_are_named() -> None:
    for grader in (STRING_CHECK, SIMILARITY, SCORE, PYTHON, MULTI):
        assert azure_rft.grader_problems(grader) == [], grader["type"]
    cases = [({**STRING_CHECK, "operation": "contains"}, "operation"),
             ({**SIMILARITY, "evaluation_metric": "cosine"}, "evaluation_metric"),
             ({**SCORE, "model": "gpt-4.1"}, "cannot grade"),
             ({**PYTHON, "source": "def score(x):\n    return 1\n"}, "grade(sample, item)"),
             ({**PYTHON, "source": "def grade(sample, item):\n    return (\n"}, "does not compile"),
             ({**PYTHON, "source": "def grade(sample, item):\n    return 1.0\n" + "#" * (256 * 1024)}, "256 KB"),
             ({**MULTI, "calculate_output": "exact + missing"}, "'missing'"),
             ({**STRING_CHECK, "reference": "{{ solution }}"}, "namespaced"),
             ({"type": "label_model", "name": "x"}, "not a grader type"),
             ({"type": "string_check", "name": "x"}, "input is required")]
    for grader, expected in cases:
        problems = azure_rft.grader_problems(grader)
        assert any(expected in p for p in problems), (grader, problems)
    assert azure_rft.item_fields(MULTI) == {"solution"}


def test_rft_data_and_hyperparameters_are_checked() -> None:
    good = {"messages": [{"role": "user", "content": "1+1?"}], "solution": "2"}
    assert azure_rft.example_problem(good, {"solution"}) is None
    ends_with_answer = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
                        "solution": "2"}
    assert "'user' role" in azure_rft.example_problem(ends_with_answer, {"solution"})
    assert "item.solution" in azure_rft.example_problem({"messages": good["messages"]}, {"solution"})
    assert azure_rft.hyperparameter_problems({"reasoning_effort": "low", "eval_interval": 5, "compute_multiplier": 1.5}) == []
    assert azure_rft.hyperparameter_problems({"reasoning_effort": "max"})
    assert azure_rft.hyperparameter_problems({"beta": 0.1})


def test_plan_validates_the_grader_with_the_service_and_speaks_hours(
        azure_emulator: AzureEmulator, azure_env: dict, tmp_path: Path) -> None:
    provider, _ = _provider(azure_emulator)
    before = len(azure_emulator.app.request_log)
    notes = provider.plan(_spec(tmp_path, MULTI))
    sent = azure_emulator.app.request_log[before:]
    assert any(line.startswith("POST /openai/v1/fine_tuning/alpha/graders/validate") for line in sent), sent
    assert any("validated by the service" in n for n in notes)
    assert any("$100 per training hour" in n and "$5,000" in n and "50 training hours" in n for n in notes)
    assert provider.hourly_billing(_spec(tmp_path)) == (100.0, 5000.0)


def test_what_the_service_would_refuse_stops_before_upload(azure_emulator: AzureEmulator, azure_env: dict,
                                                           tmp_path: Path) -> None:
    provider, _ = _provider(azure_emulator)
    files = azure_emulator.app.store.summary()["files"]
    with pytest.raises(errors.ConfigError) as caught:
        provider.plan(_spec(tmp_path, None))
    assert "--grader" in str(caught.value)
    with pytest.raises(errors.ConfigError) as caught:
        provider.plan(_spec(tmp_path, {**STRING_CHECK, "operation": "contains"}))
    assert "operation must be one of eq, ne, like, ilike" in str(caught.value)
    spec = _spec(tmp_path)
    _rft_data(spec.training_file, last_role="assistant")
    with pytest.raises(errors.DatasetError) as data:
        provider.plan(spec)
    assert "'user' role" in str(data.value)
    with pytest.raises(errors.ConfigError):
        provider.plan(_spec(tmp_path, hyperparameters={"extra": {"reasoning_effort": "max"}}))
    with pytest.raises(errors.CapabilityError) as supervised:  # gpt-4.1 takes SFT/DPO, not RFT
        AzureProvider({"base_model": "gpt-4.1"}).plan(_spec(tmp_path).model_copy(update={"base_model": "gpt-4.1"}))
    assert "o4-mini" in str(supervised.value.hint)
    assert azure_emulator.app.store.summary()["files"] == files  # nothing was uploaded


class _Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, run: object, message: str) -> None:
        self.lines.append(message)


def test_max_cost_below_the_services_pause_is_refused_before_upload(azure_emulator: AzureEmulator, azure_env: dict,
                                                                    tmp_path: Path) -> None:
    from types import SimpleNamespace

    provider, _ = _provider(azure_emulator)
    reporter = _Reporter()
    with pytest.raises(errors.QuotaExceeded) as caught:
        before_upload(SimpleNamespace(spec=_spec(tmp_path, max_cost_usd=300)), provider, reporter, None)
    assert caught.value.exit_code == errors.EXIT_CAPABILITY
    assert "3.00 training hours" in str(caught.value) and "--max-cost 5000" in str(caught.value.hint)
    assert before_upload(SimpleNamespace(spec=_spec(tmp_path, max_cost_usd=5000)), provider, _Reporter(), None) is None


def _create(provider: AzureProvider, spec: FineTuneSpec, run_id: str) -> str:
    files = []
    for role, path in (("training", spec.training_file), ("validation", spec.validation_file)):
        copy = path.parent / f"ct-{run_id}-{role}.jsonl"
        copy.write_bytes(path.read_bytes())
        files.append(provider.upload_file(copy))
    return provider.create_job(spec, training_file_id=files[0], validation_file_id=files[1], run_id=run_id).id


def test_an_rft_job_runs_and_a_job_paused_at_the_cap_is_a_clear_state(azure_emulator: AzureEmulator, azure_env: dict,
                                                                      tmp_path: Path) -> None:
    from cloudtune.ledger import new_run_id

    provider, time = _provider(azure_emulator)
    spec = _spec(tmp_path, hyperparameters={"epochs": 2, "extra": {"reasoning_effort": "low", "eval_interval": 2}})
    job_id = _create(provider, spec, new_run_id())
    with azure_emulator.app.lock:
        stored = azure_emulator.app.store.ft_jobs[job_id]
        assert stored["method"]["type"] == "reinforcement"
        assert stored["method"]["reinforcement"]["grader"] == STRING_CHECK
        assert stored["method"]["reinforcement"]["hyperparameters"] == {"n_epochs": 2, "reasoning_effort": "low",
                                                                        "eval_interval": 2}
    final = poller.wait_for_job(provider, job_id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
    assert final.state == JobState.SUCCEEDED and final.fine_tuned_model.startswith("o4-mini-2025-04-16.ft-")
    # ARM (the emulator) accepts a DeveloperTier deployment of an o4-mini fine-tune (fine-tuning-deploy.md)
    from cloudtune.types import DeployOptions

    name = "rft-dev-" + job_id[-6:]
    deployed = provider.deploy(final.fine_tuned_model, name=name, options=DeployOptions(sku="DeveloperTier"))
    assert deployed.details["sku"] == "DeveloperTier"
    assert any("2027-10-16" in note for note in deployed.details["notes"])  # when o4-mini fine-tunes stop serving
    provider.undeploy(name)
    poller.wait_for_deployment(provider, name, target="deleted", timeout_s=600, sleep=time.sleep, clock=time.clock)

    timeline = azure_emulator.app.store.timeline
    old = timeline.rft_hour_s
    timeline.rft_hour_s = 0.05  # 50 billed hours reach the cap 2.5 s into training
    try:
        job_id = _create(provider, spec, new_run_id())
        with pytest.raises(errors.WaitTimeout):
            def stop_at_cap(job):  # what the pipeline's wait does with such a job
                if job.error is not None and job.error.code == "paused_at_billing_cap":
                    raise errors.WaitTimeout(job.error.message)
            poller.wait_for_job(provider, job_id, timeout_s=3600, sleep=time.sleep, clock=time.clock, on_job=stop_at_cap)
        paused = provider.get_job(job_id)
        assert paused.state == JobState.PAUSED and paused.error.code == "paused_at_billing_cap"
        assert "$5,000" in paused.error.message and "cloudtune resume" in paused.error.message
        assert provider.list_checkpoints(job_id), "a deployable checkpoint is kept at the cap"
        time.sleep(600)
        assert provider.get_job(job_id).state == JobState.PAUSED  # it waits for a decision
        assert provider.resume_job(job_id).state == JobState.RUNNING
        final = poller.wait_for_job(provider, job_id, timeout_s=3600, sleep=time.sleep, clock=time.clock)
        assert final.state == JobState.SUCCEEDED
    finally:
        timeline.rft_hour_s = old


def test_the_service_takes_rft_shapes_and_the_graders_endpoints(azure_emulator: AzureEmulator, azure_env: dict) -> None:
    import openai

    provider, _ = _provider(azure_emulator)
    client = provider._route("openai").client.with_options(max_retries=0)
    run = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="4", item={"solution": "4"})
    assert run.reward == 1.0
    assert client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="5", item={"solution": "4"}).reward == 0.0
    assert client.fine_tuning.alpha.graders.validate(grader=MULTI).grader is not None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.alpha.graders.validate(grader={**SCORE, "model": "gpt-4.1"})
    uploaded = client.files.create(file=("rft.jsonl", b'{"messages":[{"role":"user","content":"1+1?"}],"solution":"2"}\n'),
                                   purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:  # RFT needs a validation file
        client.fine_tuning.jobs.create(model="o4-mini-2025-04-16", training_file=uploaded.id,
                                       method={"type": "reinforcement", "reinforcement": {"grader": STRING_CHECK}},
                                       extra_body={"trainingType": "GlobalStandard"})
    assert "validation file" in str(refused.value)


def test_local_reinforcement_is_refused_naming_the_azure_route(tmp_path: Path) -> None:
    from tests.support.testenv import env_without

    env = env_without("AZURE_", "OPENAI_", "CLOUDTUNE_")
    env.update(CLOUDTUNE_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), CLOUDTUNE_TODAY="2026-11-25")
    grader = _grader_file(tmp_path / "grader.json", STRING_CHECK)
    result = run_cloudtune(["run", "--provider", "local", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--train",
                            str(_rft_data(tmp_path / "t.jsonl")), "--method", "reinforcement", "--grader", str(grader),
                            "--no-deploy"], ROOT, env, 300)
    assert result.returncode == errors.EXIT_CAPABILITY, (result.stdout[-2000:], result.stderr[-2000:])
    assert "--provider azure --model o4-mini --method reinforcement" in result.stdout + result.stderr
    assert os.path.isdir(tmp_path / "home")


def test_validate_command_checks_rft_data_against_the_grader(tmp_path: Path) -> None:
    from tests.support.testenv import env_without

    env = env_without("AZURE_", "OPENAI_", "CLOUDTUNE_")
    env.update(CLOUDTUNE_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    grader = _grader_file(tmp_path / "grader.yaml", STRING_CHECK)

    def validate(data: Path) -> subprocess.CompletedProcess[str]:
        return run_cloudtune(["validate", str(data), "--provider", "azure", "--method", "reinforcement", "--grader",
                              str(grader)], ROOT, env, 120)

    assert validate(_rft_data(tmp_path / "good.jsonl")).returncode == 0
    bad = validate(_rft_data(tmp_path / "bad.jsonl", field="answer"))
    assert bad.returncode == 2 and "item.solution" in bad.stdout


def test_openai_reinforcement_is_refused_naming_the_azure_route(tmp_path: Path) -> None:
    from providers.openai.provider import OpenAIProvider

    spec = FineTuneSpec(provider="openai", base_model="o4-mini-2025-04-16", method="reinforcement",
                        training_file=_rft_data(tmp_path / "t.jsonl"))
    with pytest.raises(errors.CapabilityError) as caught:
        OpenAIProvider({}).plan(spec)
    assert caught.value.exit_code == errors.EXIT_CAPABILITY
    assert "2026-10-23" in str(caught.value) and "--provider azure --model o4-mini" in str(caught.value.hint)
