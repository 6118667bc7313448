"""Provider name -> lazily imported class (libcloud ``DRIVERS`` / fsspec ``known_implementations``).

Nothing here imports a provider module or an SDK until a provider is asked for,
so ``cloudtune --help`` stays fast. Third-party providers register through the
entry-point group ``cloudtune.providers`` (``name = "package.module:Class"``).
A dotted ``package.module:Class`` is also accepted directly as a provider name,
which is how plugins under development (and the test suite's fakes) are used.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudtune import errors

if TYPE_CHECKING:
    from cloudtune.provider import Provider
    from cloudtune.provider_facts import ProviderFacts

ENTRY_POINT_GROUP = "cloudtune.providers"
DEFAULT_PROVIDER = "local"
#: documented default of ``cloudtune dataset check --provider`` and ``validate_file``: the strictest
#: hosted rules, so a file that passes is accepted by every built-in provider's upload
DATASET_CHECK_PROVIDER = "openai"


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    target: str  # "module:Class"
    extra: str | None  # pip extra with its SDK
    summary: str

    @property
    def install_hint(self) -> str:
        if not self.extra:
            return "pip install cloudtune"
        return f"pip install 'cloudtune[{self.extra}]'"


BUILTIN_PROVIDERS: dict[str, ProviderEntry] = {
    "openai": ProviderEntry("openai", "providers.openai:OpenAIProvider", "openai", "OpenAI fine-tuning API"),
    "azure": ProviderEntry(
        "azure", "providers.azure:AzureProvider", "azure", "Azure AI Foundry: serverless (Phi) and Azure OpenAI"
    ),
    "local": ProviderEntry("local", "providers.local:LocalProvider", "local", "QLoRA/LoRA on this machine's GPU or CPU"),
}


# Entry points are read from every distribution's metadata on sys.path (~300 in a full install: ~7 ms),
# and a command resolves its provider several times; what is installed cannot change under a running
# command, but sys.path can (a test, an embedding program), so the answer is kept per sys.path.
_entry_point_cache: tuple[tuple[str, ...], dict[str, ProviderEntry]] | None = None


def _entry_point_providers() -> dict[str, ProviderEntry]:
    global _entry_point_cache
    search_path = tuple(sys.path)
    if _entry_point_cache is not None and _entry_point_cache[0] == search_path:
        return dict(_entry_point_cache[1])
    from importlib.metadata import entry_points

    found: dict[str, ProviderEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ProviderEntry(ep.name, ep.value, None, f"plugin ({ep.value})")
    _entry_point_cache = (search_path, found)
    return dict(found)


def known_providers() -> dict[str, ProviderEntry]:
    """Built-in providers plus entry-point plugins (plugins cannot shadow built-ins)."""
    providers = _entry_point_providers()
    providers.update(BUILTIN_PROVIDERS)
    return providers


def default_provider_name() -> str:
    return os.environ.get("CLOUDTUNE_PROVIDER") or DEFAULT_PROVIDER


def resolve(name: str | None) -> ProviderEntry:
    name = name or default_provider_name()
    providers = known_providers()
    if name in providers:
        return providers[name]
    if ":" in name:
        return ProviderEntry(name, name, None, "provider class given by import path")
    valid = ", ".join(sorted(providers))
    raise errors.ProviderUnavailable(
        f"Unknown provider {name!r}. Valid providers: {valid}.",
        hint="Pick one with --provider or CLOUDTUNE_PROVIDER; third-party providers register "
        f"under the entry-point group {ENTRY_POINT_GROUP!r}.",
    )


def provider_class(name: str | None) -> type["Provider"]:
    entry = resolve(name)
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ProviderUnavailable(
            f"The {entry.name} provider needs packages that are not installed ({exc.name or exc}).",
            hint=f"Install them with: {entry.install_hint}",
            provider=entry.name,
        ) from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError as exc:
        raise errors.ProviderUnavailable(f"{entry.target}: no class {class_name!r} in {module_name}") from exc
    return cls


#: options cloudtune itself passes to every provider (never typed by the user, always accepted)
CORE_OPTIONS: dict[str, str] = {"base_model": "the run's base model (set by cloudtune)"}


def provider_facts(name: str | None) -> "ProviderFacts":
    """What the provider ``name`` declares about itself (data rules, models, concurrency...).
    A name no installed provider answers to gets the documented defaults, so a dataset can be
    checked for a provider whose package is not installed here."""
    from cloudtune.provider_facts import DEFAULT_FACTS

    try:
        cls = provider_class(name)
    except errors.ProviderUnavailable:
        return DEFAULT_FACTS
    return getattr(cls, "facts", DEFAULT_FACTS)


def check_options(name: str | None, options: Mapping[str, Any]) -> None:
    """Validate ``-o`` options against the provider's ``Options`` model before a run is recorded:
    a key it does not read (``-o lora_rnak=8``) is refused naming the ones it does, and a value of
    the wrong type (``-o read_attempts=many``) is refused naming the option."""
    cls = provider_class(name)
    label = cls.name or resolve(name).name
    unknown = sorted(str(key) for key in options if key not in cls.Options.model_fields)
    if unknown:
        guesses = [close for key in unknown for close in difflib.get_close_matches(key, cls.option_names, n=1)]
        offered = "; ".join(f"{key} ({help_text})" for key, help_text in sorted(cls.option_names.items()))
        raise errors.ConfigError(
            f"The {label} provider has no option {', '.join(repr(k) for k in unknown)}. "
            + (f"Its options: {offered}." if offered else "It takes no options."),
            hint=(f"Did you mean {', '.join(guesses)}? " if guesses else "")
            + "Training settings (epochs, lora_r...) go under hyperparameters: in the YAML config, not -o.",
            provider=label,
        )
    from pydantic import ValidationError

    try:
        cls.Options.model_validate(dict(options))
    except ValidationError as exc:
        # the value itself is not repeated: an option may hold something secret
        bad = "; ".join(f"-o {'.'.join(str(p) for p in err['loc'])} ({err['msg']})" for err in exc.errors())
        raise errors.ConfigError(
            f"The {label} provider cannot use {bad}.",
            hint="; ".join(f"{key}: {help_text}" for key, help_text in sorted(cls.option_names.items())
                           if key in {str(err['loc'][0]) for err in exc.errors() if err['loc']}) or None,
            provider=label,
        ) from None


def get_provider(name: str | None = None, options: dict[str, Any] | None = None, **kwargs: Any) -> "Provider":
    """Instantiate a provider by name (``None`` = ``CLOUDTUNE_PROVIDER`` or the default)."""
    check_options(name, options or {})
    return provider_class(name)(options or {}, **kwargs)
