"""``cloudtune delete-model MODEL --provider azure`` with both Azure routes configured goes where the
model id says: a serverless (AzureML) model id to the serverless route - its endpoints undeployed
there, then the model deleted - and an Azure OpenAI id to the Azure OpenAI route (that one end to end
in test_cli_e2e's delete-model test)."""

from __future__ import annotations

import pytest

from tests.azure.test_cli_e2e import Cli, Emulator, _json, cli, emulator  # noqa: F401 - fixtures used by name


def test_both_routes_configured(emulator: Emulator) -> None:  # noqa: F811
    # the premise: the emulator configures both routes at once
    assert emulator.env.get("AZURE_OPENAI_ENDPOINT") and emulator.env.get("AZURE_AI_PROJECT")


def test_a_serverless_model_is_deleted_on_the_serverless_route(cli: Cli, emulator: Emulator) -> None:  # noqa: F811
    run = _json(cli(*cli.run_args("Phi-4-mini-instruct"), "--cleanup", "never"))
    model = run["fine_tuned_model"]
    assert model and run["deployments"], run
    assert model.startswith("azureml:")
    deleted = cli("delete-model", model, "--provider", "azure", "--json")
    assert deleted.returncode == 0, (deleted.stdout[-2000:], deleted.stderr[-2000:])
    doc = _json(deleted)
    assert f"model:{model}" in doc["deleted"] and any(d.startswith("deployment:") for d in doc["deleted"])
    state = emulator.state()
    name, version = model.removeprefix("azureml:").rsplit(":", 1)
    assert not any(name in item for item in state["models"]), state["models"]
    assert not any(run["deployments"][0] in item for item in state["serverless_endpoints"])
    assert cli("cleanup", run["run_id"], "--json").returncode == 0


@pytest.mark.parametrize(("model", "route"), [
    ("azureml:Phi-4-mini-instruct-ft-0123456789ab:1", "serverless"),
    ("azureml://registries/azureml/models/Phi-4-mini-instruct/versions/7", "serverless"),
    ("gpt-4o-mini-2024-07-18.ft-0123456789abcdef0123456789abcdef", "openai"),
    ("ft:gpt-4o-mini-2024-07-18:org::abc123", "openai"),
])
def test_model_ids_route_by_their_shape_whatever_is_configured(model: str, route: str) -> None:
    from providers.azure import AzureProvider

    # a serverless base model and an Azure OpenAI endpoint both configured: only the id decides
    for options in ({"base_model": "Phi-4-mini-instruct", "endpoint": "https://x.openai.azure.com"},
                    {"base_model": "gpt-4o-mini", "project": "p"}):
        assert AzureProvider(options).route_name(model) == route
