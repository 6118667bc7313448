"""The Azure sample configs load into specs that pick the intended route."""

from __future__ import annotations

from pathlib import Path
import pytest

from cloudtune.cli import build_parser
from cloudtune.config import build_spec
from providers.azure import AzureProvider

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize(("name", "route"), [("azure-openai.yaml", "openai"), ("azure-serverless.yaml", "serverless")])
def test_sample_builds_a_spec_for_its_route(name: str, route: str) -> None:
    args = build_parser().parse_args(["run", str(SAMPLES / name)])
    spec = build_spec(args)
    assert spec.provider == "azure" and spec.training_file.exists()
    assert spec.validation_split or spec.validation_file
    assert AzureProvider({**spec.provider_options, "base_model": spec.base_model}).route_name() == route
