"""Each provider declares the ``-o`` options it reads as a pydantic model (``Options``): an unknown
key or a value of the wrong type is refused by validation (exit 2) before a run is recorded."""

from __future__ import annotations

import pytest

from cloudtune import errors, registry
from cloudtune.provider_facts import ProviderOptions

PROVIDERS = ["openai", "azure", "local", "tests.support.memory_provider:MemoryProvider"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_every_declared_option_has_help_and_is_accepted(name: str) -> None:
    cls = registry.provider_class(name)
    assert issubclass(cls.Options, ProviderOptions)
    assert cls.option_names, f"{name} declares no options"
    assert set(cls.option_names) <= set(cls.Options.model_fields)
    assert all(isinstance(help_text, str) and help_text for help_text in cls.option_names.values())
    registry.check_options(name, {key: None for key in cls.Options.model_fields})  # every declared key passes


def test_the_options_a_provider_reads_are_declared() -> None:
    assert {"base_url", "api_key_env", "read_attempts"} <= set(registry.provider_class("openai").option_names)
    assert {"subscription_id", "endpoint", "credential", "route"} <= set(registry.provider_class("azure").option_names)
    assert {"device", "torch_threads", "fsdp"} <= set(registry.provider_class("local").option_names)


def test_unknown_options_are_refused_with_the_known_ones_named() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        registry.check_options("local", {"lora_rnak": 8, "device": "cpu"})
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "lora_rnak" in message and "device" in message and "torch_threads" in message
    registry.check_options("local", {"device": "cpu", "base_model": "m"})  # core-passed keys stay accepted
    registry.check_options("openai", {"organization": "@acme", "base_url": "http://127.0.0.1:1/v1"})


@pytest.mark.parametrize("name, options, bad", [
    ("openai", {"read_attempts": "many"}, "read_attempts"),
    ("openai", {"upload_workers": [1, 2]}, "upload_workers"),
    ("local", {"num_processes": "two"}, "num_processes"),
    ("local", {"fsdp": "maybe", "num_processes": 2}, "fsdp"),
    ("azure", {"endpoint": {"a": 1}}, "endpoint"),
])
def test_bad_option_values_are_refused_by_validation(name: str, options: dict, bad: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        registry.check_options(name, options)
    assert caught.value.exit_code == 2
    assert bad in str(caught.value)


def test_values_read_as_yaml_scalars_are_still_text() -> None:
    import datetime

    # -o api_version=2024-10-21 is a YAML date, -o project=42 a number: both still name things
    registry.check_options("azure", {"api_version": datetime.date(2024, 10, 21), "project": 42})
    registry.check_options("openai", {"read_attempts": "3", "request_timeout_s": 2.5})
    registry.check_options("local", {"fsdp": "true", "num_processes": "2"})


def test_a_provider_declaring_only_option_names_gets_a_model_of_them() -> None:
    from cloudtune.provider import Provider

    class Legacy(Provider):  # type: ignore[abstract]
        name = "legacy"
        option_names = {"colour": "any colour"}

    assert set(Legacy.Options.model_fields) == {"base_model", "colour"}
    Legacy.Options.model_validate({"colour": "red"})
    with pytest.raises(Exception):
        Legacy.Options.model_validate({"color": "red"})
