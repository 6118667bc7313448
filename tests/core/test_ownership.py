"""A run owns exactly what it created (issue 9), through the CLI against the file-backed memory
provider: the provider's own state file is the evidence, not the ledger."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.core.conftest import CLI, MEMORY, kill9


def _doc(result) -> dict:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stdout + result.stderr
    return json.loads(lines[-1])


def _jobs_of(cli: CLI, run_id: str) -> list[dict]:
    return [j for j in cli.state()["jobs"].values() if j["metadata"].get("cloudtune_run_id") == run_id]


def test_a_refused_deployment_name_is_never_deleted_by_the_refused_run(cli: CLI) -> None:
    first = _doc(cli.run_memory("--deployment-name", "prod", "--json"))
    assert first["status"] == "succeeded"
    second = cli.run_memory("--deployment-name", "prod", "--cleanup", "on-failure", "--json")
    assert second.returncode == 1, second.stderr
    assert "already serves" in second.stderr and "never delete prod" in second.stderr
    deployments = cli.state()["deployments"]
    assert deployments["prod"]["model"] == first["fine_tuned_model"]  # run A's deployment survived
    doc = _doc(cli("status", _doc(second)["run_id"], "--json", "--offline"))
    assert [r["state"] for r in doc["resources"] if r["kind"] == "deployment"] == ["foreign"]
    # the second run's own model and files were cleaned up (policy on-failure)
    assert doc["fine_tuned_model"] not in cli.state()["models"]


def test_deploy_name_of_another_runs_deployment_then_cleanup_leaves_it(cli: CLI) -> None:
    first = _doc(cli.run_memory("--deployment-name", "prod", "--json"))
    second = _doc(cli.run_memory("--json"))
    refused = cli("deploy", second["run_id"], "--name", "prod", "--json")
    assert refused.returncode == 1 and "already serves" in refused.stderr
    cleaned = cli("cleanup", second["run_id"], "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cli.state()["deployments"]["prod"]["model"] == first["fine_tuned_model"]
    assert second["deployment"] not in cli.state()["deployments"]  # its own one is gone


def test_deploy_name_adds_a_second_deployment_of_the_run(cli: CLI) -> None:
    run = _doc(cli.run_memory("--json"))
    added = cli("deploy", run["run_id"], "--name", "second", "--json")
    assert added.returncode == 0, added.stderr
    assert cli.state()["deployments"]["second"]["model"] == run["fine_tuned_model"]
    assert set(_doc(added)["deployments"]) == {run["deployment"], "second"}


def test_undeploy_of_a_run_that_never_deployed_touches_nothing(cli: CLI) -> None:
    first = _doc(cli.run_memory("--deployment-name", "prod", "--json"))
    second = _doc(cli.run_memory("--deployment-name", "prod", "--no-deploy", "--json"))
    result = cli("undeploy", second["run_id"])
    assert result.returncode == 0, result.stderr
    assert "nothing was deleted" in result.stdout
    assert cli.state()["deployments"]["prod"]["model"] == first["fine_tuned_model"]
    assert not any(c.startswith("undeploy") for c in cli.state()["calls"])


def test_resume_after_a_failure_cleanup_does_not_report_success(cli: CLI) -> None:
    failed = cli.run_memory("--cleanup", "on-failure", "--json", CLOUDTUNE_MEMORY_RAISE="chat:conflict")
    assert failed.returncode == 1, failed.stderr
    run_id = _doc(failed)["run_id"]
    assert cli.state()["models"] == [] and cli.state()["files"] == {} and cli.state()["deployments"] == {}
    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 1, resumed.stdout
    assert "cannot be finished" in resumed.stderr and "was deleted" in resumed.stderr
    assert len(_jobs_of(cli, run_id)) == 1


def test_cleanup_refuses_a_running_job_and_cancel_stops_it_first(cli: CLI) -> None:
    started = _doc(cli.run_memory("--no-wait", "--json"))
    refused = cli("cleanup", started["run_id"], "--json")
    assert refused.returncode == 1
    assert "still" in refused.stderr + refused.stdout and len(cli.state()["files"]) == 1
    cancelled = cli("cleanup", started["run_id"], "--cancel", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    (job,) = _jobs_of(cli, started["run_id"])
    assert job["status"] == "cancelled" and cli.state()["files"] == {}


def test_cleanup_older_than_skips_active_runs_and_says_so(cli: CLI) -> None:
    active = _doc(cli.run_memory("--no-wait", "--json"))
    result = cli("cleanup", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert f"{active['run_id']}: skipped" in result.stdout
    assert len(cli.state()["files"]) == 1


def test_a_second_process_on_a_driven_run_exits_6_naming_the_holder(cli: CLI) -> None:
    process = cli.start_memory("--json", CLOUDTUNE_MEMORY_HANG="create_job")
    cli.wait_for_hang(process)
    run_id = json.loads(cli("list", "--json").stdout)["runs"][0]["run_id"]
    second = cli("resume", run_id)
    assert second.returncode == 6, second.stderr
    assert f"pid {process.pid}" in second.stderr
    cleanup = cli("cleanup", run_id)
    assert cleanup.returncode == 6 and cli.state()["files"]  # nothing deleted under the driver
    kill9(process)  # the kernel drops the lock
    resumed = cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert len(_jobs_of(cli, run_id)) == 1


def test_validation_failure_deletes_nothing_and_resume_uploads_the_fixed_data(cli: CLI) -> None:
    good = (cli.tmp / "train.jsonl").read_text()
    (cli.tmp / "train.jsonl").write_text('{"messages": "not a list"}\n' * 12)
    failed = cli.run_memory("--cleanup", "on-failure", "--json")
    assert failed.returncode == 2, failed.stderr
    # nothing was uploaded: the provider never stored anything (no state at all, or no files)
    assert not cli.state_file.exists() or cli.state()["files"] == {}
    (cli.tmp / "train.jsonl").write_text(good)
    resumed = cli("resume", _doc(failed)["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert _doc(resumed)["training_file_id"] in cli.state()["files"]


def test_an_interrupted_upload_is_adopted_by_its_own_run_only(cli: CLI) -> None:
    # run A's upload reaches the provider, then A dies before hearing back
    process = cli.start_memory("--json", CLOUDTUNE_MEMORY_HANG="upload_file")
    cli.wait_for_hang(process)
    kill9(process)
    run_a = json.loads(cli("list", "--json").stdout)["runs"][0]["run_id"]
    # run B uploads the very same data (same content, same size) and finishes
    run_b = _doc(cli.run_memory("--json"))
    resumed = _doc(cli("resume", run_a, "--json"))
    assert resumed["status"] == "succeeded"
    assert resumed["training_file_id"] != run_b["training_file_id"]
    uploads = [c for c in cli.state()["calls"] if c.startswith("upload_file")]
    assert len(uploads) == 2  # one per run: A's lost answer was found by its run-tagged name
    names = {f["name"] for f in cli.state()["files"].values()}
    assert names == {f"ct-{run_a}-training.jsonl", f"ct-{run_b['run_id']}-training.jsonl"}
    cli("cleanup", run_a)
    assert [f["name"] for f in cli.state()["files"].values()] == [f"ct-{run_b['run_id']}-training.jsonl"]


def test_sigterm_in_the_wait_with_on_failure_keeps_the_jobs_files(cli: CLI) -> None:
    process = cli.start_memory("--cleanup", "on-failure", "--json", CLOUDTUNE_MEMORY_HANG="get_job")
    cli.wait_for_hang(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert len(cli.state()["files"]) == 1  # the job may still be reading it
    resumed = cli("resume", json.loads(out.strip().splitlines()[-1])["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert _doc(resumed)["status"] == "succeeded"


def test_resume_on_a_machine_that_never_saw_the_run_rebuilds_it_from_the_provider(cli: CLI, tmp_path: Path) -> None:
    started = _doc(cli.run_memory("--no-wait", "--json"))
    other_home = str(tmp_path / "fresh-home")
    status = cli("status", started["run_id"], "--provider", MEMORY, "--model", "base", "--train", "train.jsonl",
                 "--json", CLOUDTUNE_HOME=other_home)
    assert status.returncode == 0, status.stderr
    assert _doc(status)["job_id"] == started["job_id"]
    resumed = cli("resume", started["run_id"], "--provider", MEMORY, "--model", "base", "--train", "train.jsonl",
                  "--json", CLOUDTUNE_HOME=other_home)
    assert resumed.returncode == 0, resumed.stderr
    doc = _doc(resumed)
    assert doc["status"] == "succeeded" and doc["job_id"] == started["job_id"]
    assert doc["training_file_id"] == started["training_file_id"]
    assert len(_jobs_of(cli, started["run_id"])) == 1 and len(cli.state()["files"]) == 1


def test_resume_after_a_later_cleanup_of_a_finished_run_is_not_success(cli: CLI) -> None:
    done = _doc(cli.run_memory("--json"))
    assert cli("cleanup", done["run_id"]).returncode == 0
    resumed = cli("resume", done["run_id"], "--json")
    assert resumed.returncode == 1, resumed.stderr
    assert "was deleted" in resumed.stderr and f"model:{done['fine_tuned_model']}" in resumed.stderr


def test_resume_of_a_run_whose_own_policy_cleaned_up_says_so_and_succeeds(cli: CLI) -> None:
    done = _doc(cli.run_memory("--cleanup", "always", "--json"))
    assert cli.state()["models"] == [] and cli.state()["files"] == {}
    resumed = cli("resume", done["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    assert "cleanup:" in resumed.stdout and "policy always" in resumed.stdout
