"""Issue 16 points 4 and 11 through the CLI against ``cloudtune emulate azure``, judged from the
emulator's records: on a fresh machine, a deployment that merely has the run's default name is
not the run's; and the run's tagged deployments made on another machine are found by the
original machine's ``undeploy`` and ``cleanup``."""

from __future__ import annotations

from pathlib import Path

from tests.azure.test_cli_e2e import Cli, Emulator, _json, cli, emulator  # noqa: F401 - fixtures used by name
from tests.support.emulators import control

MODEL = "gpt-4o-mini-2024-07-18"


def _spec(cli: Cli) -> tuple[str, ...]:  # noqa: F811
    return ("--provider", "azure", "--model", MODEL, "--train", str(cli.data))


def _deployments(emulator: Emulator) -> list[str]:  # noqa: F811
    return emulator.state()["cognitive_deployments"]


def test_a_rebuild_does_not_adopt_a_hand_made_deployment_with_the_runs_name(cli: Cli, emulator: Emulator,  # noqa: F811
                                                                            tmp_path: Path) -> None:
    run = _json(cli(*cli.run_args(MODEL), "--no-deploy", "--cleanup", "never"))
    run_id, model = run["run_id"], run["fine_tuned_model"]
    name = f"ct-{run_id}".lower()  # the run's default deployment name, taken by a person (no run tag)
    control(emulator.url, "/_emulator/external-deployment", {"account": "ct-aoai", "name": name, "model": model})
    fresh = Cli(emulator, tmp_path / "fresh-home", cli.data)
    resumed = fresh("resume", run_id, *_spec(cli), "--no-deploy", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    states = {r["id"]: r["state"] for r in _json(resumed)["resources"] if r["kind"] == "deployment"}
    assert states == {name: "foreign"}
    kept = fresh("cleanup", run_id, "--keep-model", "--json")
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert f"ct-aoai/{name}" in _deployments(emulator)
    fresh("cleanup", run_id, "--json")  # the model is in use by the person's deployment: it stays too
    assert f"ct-aoai/{name}" in _deployments(emulator) and model in emulator.state()["fine_tuned_models"]


def test_undeploy_and_cleanup_find_a_deployment_another_machine_made_for_the_run(cli: Cli,  # noqa: F811
                                                                                 emulator: Emulator,  # noqa: F811
                                                                                 tmp_path: Path) -> None:
    run = _json(cli(*cli.run_args(MODEL), "--no-deploy", "--cleanup", "never"))  # machine A
    run_id, model = run["run_id"], run["fine_tuned_model"]
    other = Cli(emulator, tmp_path / "machine-b", cli.data)
    deployed = other("resume", run_id, *_spec(cli), "--json")  # machine B deploys (tagged with the run)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    name = _json(deployed)["deployment"]
    assert f"ct-aoai/{name}" in _deployments(emulator)
    undeployed = cli("undeploy", run_id, "--json")  # machine A
    assert undeployed.returncode == 0, undeployed.stderr[-2000:]
    assert f"ct-aoai/{name}" not in _deployments(emulator)
    assert other("deploy", run_id, "--json").returncode == 0  # machine B deploys again
    assert f"ct-aoai/{name}" in _deployments(emulator)
    cleaned = cli("cleanup", run_id, "--json")  # machine A
    assert cleaned.returncode == 0, (cleaned.stdout[-2000:], cleaned.stderr[-2000:])
    assert f"ct-aoai/{name}" not in _deployments(emulator) and model not in emulator.state()["fine_tuned_models"]
