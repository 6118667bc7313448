"""The pipeline through the CLI, as a subprocess: exit codes, --json shape, resume after
kill -9 at each step without a second job, cleanup order, signals."""

from __future__ import annotations

import json
import signal

import pytest

from tests.core.conftest import CLI, MEMORY, kill9

RUN_KEYS = {"run_id", "provider", "job_id", "state", "fine_tuned_model", "deployment", "status", "exit_code"}


def _doc(result) -> dict:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0])


def test_run_to_a_smoke_tested_deployment_prints_one_json_document(cli: CLI) -> None:
    result = cli.run_memory("--json")
    assert result.returncode == 0, result.stderr
    doc = _doc(result)
    assert RUN_KEYS <= doc.keys()
    assert doc["status"] == "succeeded" and doc["state"] == "succeeded"
    assert doc["fine_tuned_model"].startswith("ft:base:memory:")
    assert doc["deployment"] == f"ct-{doc['run_id']}"
    assert doc["smoke_test"]
    state = cli.state()
    assert list(state["deployments"]) == [doc["deployment"]]
    assert [c for c in state["calls"] if c.startswith("create_job")] == [f"create_job {doc['job_id']}"]


def test_cleanup_always_deletes_deployment_then_model_then_files(cli: CLI) -> None:
    result = cli.run_memory("--json", "--cleanup", "always", "--validation-split", "0.25", "--seed", "7")
    assert result.returncode == 0, result.stderr
    doc = _doc(result)
    calls = [c.split()[0] for c in cli.state()["calls"] if c.split()[0] in ("undeploy", "delete_model", "delete_file")]
    assert calls == ["undeploy", "delete_model", "delete_file", "delete_file"]
    state = cli.state()
    assert state["deployments"] == {} and state["models"] == [] and state["files"] == {}
    assert doc["validation_file_id"] and f"file:{doc['validation_file_id']}" in doc["deleted"]


def test_cleanup_command_removes_everything_a_run_created(cli: CLI) -> None:
    doc = _doc(cli.run_memory("--json"))
    result = cli("cleanup", doc["run_id"], "--json")
    assert result.returncode == 0, result.stderr
    assert cli.state()["deployments"] == {} and cli.state()["models"] == [] and cli.state()["files"] == {}
    again = cli("cleanup", doc["run_id"], "--json")  # idempotent
    assert again.returncode == 0
    second = _doc(again)["runs"][0]
    assert (second["run_id"], second["deleted"], second["ok"]) == (doc["run_id"], [], True)


def test_failed_job_exits_1_with_the_providers_line(cli: CLI) -> None:
    result = cli.run_memory("--json", CLOUDTUNE_MEMORY_FAIL="validating_files")
    assert result.returncode == 1
    doc = _doc(result)
    assert doc["status"] == "failed" and doc["state"] == "failed"
    assert "line 3" in doc["error"]["message"]
    assert doc["deployment"] is None


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["--train", "missing.jsonl"], {}, 2, "does not exist"),
        (["--epochs", "0"], {}, 2, "epochs"),
        ([], {"CLOUDTUNE_MEMORY_RAISE": "create_job:auth"}, 3, "API key was refused"),
        ([], {"CLOUDTUNE_MEMORY_RAISE": "create_job:quota"}, 4, "quota"),
    ],
)
def test_exit_codes(cli: CLI, args: list[str], env: dict[str, str], code: int, needle: str) -> None:
    result = cli.run_memory(*args, **env)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_provider_lists_the_valid_names(cli: CLI) -> None:
    result = cli("run", "--provider", "nope", "--model", "m", "--train", "train.jsonl")
    assert result.returncode == 2
    assert "Unknown provider 'nope'" in result.stderr
    for name in ("azure", "local", "openai"):
        assert name in result.stderr


def test_wait_timeout_exits_5_and_resume_finishes_the_same_job(cli: CLI) -> None:
    result = cli.run_memory("--json", "--timeout", "0.3s", CLOUDTUNE_MEMORY_STEPS="100000")
    assert result.returncode == 5, result.stderr
    doc = _doc(result)
    assert doc["job_id"] and doc["status"] == "timed_out"
    finished = cli("resume", doc["run_id"], "--json", CLOUDTUNE_MEMORY_STEPS="3")
    assert finished.returncode == 0, finished.stderr
    assert _doc(finished)["job_id"] == doc["job_id"]
    assert len(cli.state()["jobs"]) == 1


@pytest.mark.parametrize("step", ["upload_file", "create_job", "get_job", "deploy", "chat"])
def test_kill_9_at_any_step_then_resume_makes_one_job_and_finishes(cli: CLI, step: str) -> None:
    process = cli.start_memory("--json", CLOUDTUNE_MEMORY_HANG=step)
    cli.wait_for_hang(process)
    kill9(process)
    result = cli("resume", "--json")
    assert result.returncode == 0, result.stderr
    doc = _doc(result)
    assert doc["status"] == "succeeded"
    state = cli.state()
    assert len(state["jobs"]) == 1
    assert [c for c in state["calls"] if c.startswith("create_job")] == [f"create_job {doc['job_id']}"]
    assert list(state["deployments"]) == [doc["deployment"]]
    assert len(state["files"]) == 1  # an upload whose answer was lost is found, not repeated
    cleanup = cli("cleanup", "--json")
    assert cleanup.returncode == 0
    assert cli.state()["deployments"] == {} and cli.state()["models"] == [] and cli.state()["files"] == {}


def test_create_that_failed_in_transit_is_found_not_repeated(cli: CLI) -> None:
    # the job is created, then the answer is lost: the pipeline must find it by run id
    result = cli.run_memory("--json", CLOUDTUNE_MEMORY_RAISE="create_job:transient")
    assert result.returncode == 0, result.stderr
    assert len(cli.state()["jobs"]) == 1


def test_sigterm_mid_wait_records_it_and_resume_completes(cli: CLI) -> None:
    process = cli.start_memory("--json", CLOUDTUNE_MEMORY_HANG="get_job")
    cli.wait_for_hang(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["status"] == "interrupted" and doc["job_id"]
    result = cli("resume", doc["run_id"], "--json")
    assert result.returncode == 0, result.stderr
    assert len(cli.state()["jobs"]) == 1


def test_sigint_with_cancel_and_cleanup_policy_leaves_nothing(cli: CLI) -> None:
    process = cli.start_memory("--json", "--cancel-on-interrupt", "--cleanup", "on-failure", CLOUDTUNE_MEMORY_HANG="get_job")
    cli.wait_for_hang(process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    state = cli.state()
    (job,) = state["jobs"].values()
    assert job["status"] == "cancelled"
    assert state["files"] == {}


def test_second_signal_exits_at_once_with_the_ledger_intact(cli: CLI) -> None:
    process = cli.start_memory("--cleanup", "always", CLOUDTUNE_MEMORY_HANG="get_job")
    cli.wait_for_hang(process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 130
    status = cli("status", "--offline", "--json")
    assert status.returncode == 0
    assert _doc(status)["job_id"]


def test_status_watch_list_cancel(cli: CLI) -> None:
    created = _doc(cli.run_memory("--json", "--no-wait"))
    assert created["job_id"] and created["status"] == "active"
    listed = _doc(cli("list", "--json"))
    assert [r["run_id"] for r in listed["runs"]] == [created["run_id"]]
    status = _doc(cli("status", created["run_id"], "--json"))
    assert status["job"]["id"] == created["job_id"]
    watch = cli("watch", created["run_id"], "--json")
    assert watch.returncode == 0
    lines = [json.loads(line) for line in watch.stdout.splitlines()]
    events = [line["id"] for line in lines if line["type"] == "event"]
    assert events and len(events) == len(set(events))
    assert lines[-1]["type"] == "result" and lines[-1]["state"] == "succeeded"
    second = _doc(cli.run_memory("--json", "--no-wait"))
    cancelled = _doc(cli("cancel", second["run_id"], "--json"))
    assert cancelled["state"] == "cancelled"


def test_deploy_undeploy_and_delete_model_commands(cli: CLI) -> None:
    doc = _doc(cli.run_memory("--json", "--no-deploy"))
    assert doc["deployment"] is None and doc["fine_tuned_model"]
    deployed = _doc(cli("deploy", doc["run_id"], "--json"))
    assert deployed["deployment"] and deployed["smoke_test"]
    # the model is deployed: delete-model must undeploy first, never surface the refusal
    deleted = cli("delete-model", doc["fine_tuned_model"], "--provider", MEMORY, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert _doc(deleted)["deleted"] == [f"deployment:{deployed['deployment']}", f"model:{doc['fine_tuned_model']}"]
    assert cli.state()["models"] == []


def test_yaml_config_with_flag_overrides(cli: CLI) -> None:
    (cli.tmp / "run.yaml").write_text(
        f"provider: {MEMORY}\nmodel: base\ntrain: train.jsonl\nhyperparameters:\n  epochs: 2\n"
        "deploy: false\nsuffix: yaml\nmetadata:\n  team: ml\n"
    )
    result = cli("run", "run.yaml", "--suffix", "flag", "--json")
    assert result.returncode == 0, result.stderr
    doc = _doc(result)
    assert doc["deployment"] is None
    (job,) = cli.state()["jobs"].values()
    assert job["metadata"] == {"team": "ml", "cloudtune_run_id": doc["run_id"]}


def test_secrets_never_reach_output_or_ledger(cli: CLI) -> None:
    secret = "sk-test-" + "x" * 24
    # the memory provider takes no api_key option (an unknown -o is refused before a run exists), so the
    # secret rides in the run's metadata, the free text the ledger stores
    (cli.tmp / "secret.yaml").write_text(f"metadata:\n  api_key: {secret}\n  note: key {secret}\n")
    result = cli.run_memory("secret.yaml", "--json", CLOUDTUNE_MEMORY_RAISE="create_job:auth", OPENAI_API_KEY=secret)
    assert result.returncode == 3, result.stderr
    assert secret not in result.stdout + result.stderr
    ledger = (cli.tmp / "home" / "ledger.sqlite3").read_bytes()
    for suffix in ("", "-wal"):
        path = cli.tmp / "home" / f"ledger.sqlite3{suffix}"
        if path.exists():
            assert secret.encode() not in path.read_bytes()
    assert ledger


def test_invalid_data_stops_before_any_upload_and_points_at_the_line(cli: CLI) -> None:
    (cli.tmp / "bad.jsonl").write_text(
        (cli.tmp / "train.jsonl").read_text() + '{"messages": [{"role": "wizard", "content": "x"}]}\n'
    )
    result = cli("run", "--provider", MEMORY, "--model", "base", "--train", "bad.jsonl", "--json")
    assert result.returncode == 2
    assert "line 13" in result.stderr and "unrecognized_role" in result.stderr
    assert not cli.state_file.exists() or cli.state()["files"] == {}


def test_malformed_config_is_exit_2_without_a_traceback(cli: CLI) -> None:
    (cli.tmp / "bad.yaml").write_text(f"provider: {MEMORY}\nmodel: base\ntrain: train.jsonl\nhyperparameters: 5\n")
    result = cli("run", "bad.yaml")
    assert result.returncode == 2
    assert "hyperparameters" in result.stderr and "Traceback" not in result.stderr


def test_unknown_provider_creates_no_run(cli: CLI) -> None:
    assert cli("run", "--provider", "nope", "--model", "m", "--train", "train.jsonl").returncode == 2
    assert json.loads(cli("list", "--json").stdout)["runs"] == []


def test_cleanup_older_than_cleans_old_runs_only(cli: CLI) -> None:
    doc = _doc(cli.run_memory("--json"))
    recent = cli("cleanup", "--older-than", "1h", "--json")
    assert recent.returncode == 0 and _doc(recent)["runs"] == []
    assert list(cli.state()["deployments"]) == [doc["deployment"]]
    everything = cli("cleanup", "--older-than", "0s", "--json")
    assert everything.returncode == 0, everything.stderr
    (cleaned,) = _doc(everything)["runs"]
    assert cleaned["run_id"] == doc["run_id"] and cleaned["ok"]
    assert cleaned["deleted"] == [f"deployment:{doc['deployment']}", f"model:{doc['fine_tuned_model']}",
                                  f"file:{doc['training_file_id']}"]
    assert cli.state()["deployments"] == {} and cli.state()["models"] == [] and cli.state()["files"] == {}


def test_delete_model_needs_a_provider_unless_given_a_run(cli: CLI) -> None:
    result = cli("delete-model", "ft:some-model")
    assert result.returncode == 2 and "--provider" in result.stderr


def test_resume_does_not_show_an_event_twice(cli: CLI) -> None:
    first = cli.run_memory("--json", "--timeout", "0.3s", CLOUDTUNE_MEMORY_STEPS="100000")
    assert first.returncode == 5
    run_id = _doc(first)["run_id"]
    watch_lines = cli("resume", run_id, "--timeout", "0.3s", CLOUDTUNE_MEMORY_STEPS="100000", CLOUDTUNE_PLAIN="1")
    assert watch_lines.returncode == 5
    shown = [line for line in watch_lines.stderr.splitlines() if "Validating training file" in line]
    assert shown == []  # shown by the first invocation, not again


def test_pause_where_the_provider_cannot_is_exit_4_with_the_reason(cli: CLI) -> None:
    doc = _doc(cli.run_memory("--json", "--no-wait"))
    result = cli("pause", doc["run_id"])
    assert result.returncode == 4
    assert "the memory provider has no pause" in result.stderr
