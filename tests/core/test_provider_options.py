"""Each provider declares the ``-o`` options it reads (``option_names``), and reads no other:
a scan of its source for option reads, so a new option cannot be added without declaring it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from cloudtune import registry

# options.get("x") / options["x"] / self._option("x", ...) / settings.get("x", ...) / settings.require("x", ...)
_READ = re.compile(r"""(?:options\.get|options\[|_option|settings\.get|settings\.require)\(?\s*["']([A-Za-z_]\w*)["']""")
# Azure's Settings reads its own options through self.get / self.require
_SETTINGS_READ = re.compile(r"""self\.(?:get|require)\(\s*["']([A-Za-z_]\w*)["']""")

PROVIDERS = ["openai", "azure", "local", "tests.support.memory_provider:MemoryProvider"]


def _options_read(cls: type) -> set[str]:
    source = Path(inspect.getfile(cls))
    files = sorted(source.parent.glob("*.py")) if source.parent.name != "support" else [source]
    found: set[str] = set()
    for path in files:
        text = path.read_text()
        found |= set(_READ.findall(text))
        if "class Settings" in text:
            found |= set(_SETTINGS_READ.findall(text))
    return found


@pytest.mark.parametrize("name", PROVIDERS)
def test_every_option_a_provider_reads_is_declared(name: str) -> None:
    cls = registry.provider_class(name)
    read = _options_read(cls)
    assert read, f"the scan found no option reads in {cls.__module__}: the pattern is out of date"
    undeclared = read - set(cls.option_names) - set(registry.CORE_OPTIONS)
    assert not undeclared, f"{name} reads options it does not declare in option_names: {sorted(undeclared)}"
    assert all(isinstance(help_text, str) and help_text for help_text in cls.option_names.values())


def test_the_scan_sees_the_reads_it_is_meant_to_see() -> None:
    assert {"base_url", "api_key_env", "read_attempts"} <= _options_read(registry.provider_class("openai"))
    assert {"subscription_id", "endpoint", "credential", "route"} <= _options_read(registry.provider_class("azure"))
    assert {"device", "torch_threads"} <= _options_read(registry.provider_class("local"))


def test_unknown_options_are_refused_with_the_known_ones_named() -> None:
    from cloudtune import errors

    with pytest.raises(errors.ConfigError) as caught:
        registry.check_options("local", {"lora_rnak": 8, "device": "cpu"})
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "lora_rnak" in message and "device" in message and "torch_threads" in message
    registry.check_options("local", {"device": "cpu", "base_model": "m"})  # core-passed keys stay accepted
    registry.check_options("openai", {"organization": "@acme", "base_url": "http://127.0.0.1:1/v1"})
