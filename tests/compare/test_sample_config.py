"""samples/compare.yaml: one spec, three providers, each with its own model from the map."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloudtune.cli import build_parser
from cloudtune.config import build_spec, read_yaml
from cloudtune.multirun import _passthrough, requested_providers, wanted

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "compare.yaml"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_the_sample_asks_for_three_providers() -> None:
    args = _args(str(SAMPLE))
    assert requested_providers(args) == ["local", "openai", "azure"] and wanted(args)
    # a child run names one provider: that is a plain single run
    assert not wanted(_args(str(SAMPLE), "--provider", "openai"))


@pytest.mark.parametrize("provider", ["local", "openai", "azure"])
def test_each_provider_gets_its_model_from_the_map(provider: str) -> None:
    spec = build_spec(_args(str(SAMPLE), "--provider", provider))
    assert spec.provider == provider
    assert spec.base_model == read_yaml(SAMPLE)["model"][provider]
    assert spec.training_file.is_file() and spec.eval_file and spec.eval_file.is_file()
    assert spec.deploy.enabled and str(spec.cleanup) == "never"  # the comparison needs the deployments


def test_children_get_the_users_flags_but_not_the_multi_provider_ones() -> None:
    args = _args(str(SAMPLE), "--provider", "local,openai", "--epochs", "2", "--no-deploy", "-o", "a=1",
                 "--report", "out", "--max-parallel", "2", "--json")
    flags = _passthrough(args)
    assert flags == ["--epochs", "2", "--no-deploy", "--option", "a=1"]
