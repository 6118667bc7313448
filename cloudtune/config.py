"""Run configuration: a YAML file, overridden by flags, becomes a :class:`FineTuneSpec`.

``--provider`` alone switches the provider with everything else unchanged.
Relative paths in a YAML file are relative to that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.filekind import not_a_regular_file

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s?)?\s*$")

# YAML spellings accepted for FineTuneSpec fields
ALIASES = {
    "model": "base_model",
    "train": "training_file",
    "training": "training_file",
    "validation": "validation_file",
    "eval": "eval_file",
    "hyper_parameters": "hyperparameters",
    "timeout": "timeout_s",
    "options": "provider_options",
    "max_cost": "max_cost_usd",
    "grader": "grader_file",
}
PATH_FIELDS = ("training_file", "validation_file", "eval_file", "grader_file")
# FineTuneSpec field -> the flag (without "--") that sets it
_FLAGS = {"provider": "provider", "base_model": "model", "training_file": "train", "validation_file": "validation",
          "validation_split": "validation_split", "method": "method", "suffix": "suffix", "seed": "seed",
          "eval_file": "eval", "cleanup": "cleanup", "wait": "wait", "cancel_on_interrupt": "cancel_on_interrupt",
          "timeout_s": "timeout", "max_cost_usd": "max_cost", "grader_file": "grader"}


def parse_duration(text: str | float | int | None) -> float | None:
    """"90" / "90s" / "30m" / "2h" / "1h30m" / "1d" -> seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise errors.ConfigError(f"Cannot read the duration {text!r}; write it like 90s, 30m, 2h or 1h30m.")
    d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return d * 86400 + h * 3600 + m * 60 + s


class _DuplicateKey(Exception):
    pass


def _unique_keys_loader() -> Any:
    """yaml's SafeLoader, refusing a key given twice in one mapping (plain YAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: yaml itself reports it below
                    continue
                if first is not None:
                    raise _DuplicateKey(f"the key {key!r} is given twice: on line {first} and again on line {line}.")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_yaml(path: Path) -> dict[str, Any]:
    """The config file's mapping, keys as the user wrote them."""
    import yaml

    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise errors.ConfigError(f"Config file {path} does not exist.") from exc
    except OSError as exc:
        raise errors.ConfigError(f"Config file {path} cannot be read: {exc.strerror or exc}.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise errors.ConfigError(
            f"Config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded.",
            hint="Save the file as UTF-8 (most editors offer it under 'Save with encoding').",
        ) from exc
    try:
        data = yaml.load(text, Loader=_unique_keys_loader()) or {}  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise errors.ConfigError(f"Config file {path}: {exc}", hint="Keep one of them: YAML would silently use the last.") from exc
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise errors.ConfigError(f"Config file {path} must hold a mapping of settings, not {type(data).__name__}.")
    return data


def load_yaml(path: Path) -> dict[str, Any]:
    """The config file's settings under FineTuneSpec's field names; paths made absolute (relative
    ones are relative to the file's directory, so the run does not depend on the shell's cwd)."""
    return _load_yaml(path)[0]


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`load_yaml`'s settings, and each field's key as the file spells it (for messages)."""
    raw = read_yaml(path)
    data = {ALIASES.get(str(k), str(k)): v for k, v in raw.items()}
    spelled = {ALIASES.get(str(k), str(k)): str(k) for k in raw}
    for key in PATH_FIELDS:
        value = data.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise errors.ConfigError(
                f"{spelled.get(key, key)} in {path} must be a file path, not {value!r}.",
                hint=f"e.g. {spelled.get(key, key)}: data/train.jsonl",
            )
        data[key] = absolute_path(value, relative_to=Path(path).parent)
    if "timeout_s" in data:
        try:
            data["timeout_s"] = parse_duration(data["timeout_s"])
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{spelled.get('timeout_s', 'timeout')} in {path}: {exc}") from exc
    if isinstance(data.get("deploy"), bool):
        data["deploy"] = {"enabled": data["deploy"]}
    return data, spelled


def absolute_path(value: str, *, relative_to: Path | None = None) -> str:
    """``value`` as an absolute, normalised path (``~`` expanded); relative ones start at
    ``relative_to`` (default: the current directory)."""
    path = Path(value).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    return os.path.abspath(path)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``-o KEY=VALUE`` pairs. A value is read as YAML (``-o epochs=3`` is a number) unless YAML
    cannot read it: then it is the text as given (``-o organization=@acme``)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigError(f"Provider options are KEY=VALUE, not {pair!r}.")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _use_state(url: Any, config: Any) -> None:
    """``state: URL`` in a config: where this run is recorded, unless CLOUDTUNE_STATE or --state says."""
    import os

    if url is None:
        return
    if not isinstance(url, str) or "://" not in url:
        raise errors.ConfigError(f"state in {config} must be a URL (sqlite:///PATH, postgresql://..., azblob://...), "
                                 f"not {url!r}.")
    os.environ.setdefault("CLOUDTUNE_STATE", url)


def build_spec(args: Any) -> Any:
    """Merge the YAML config (if any) with the flags into a validated FineTuneSpec."""
    from pydantic import ValidationError

    from cloudtune.registry import check_options, default_provider_name
    from cloudtune.types import FineTuneSpec

    config = getattr(args, "config", None)
    data, spelled = _load_yaml(Path(config)) if config else ({}, {})
    for key in ("hyperparameters", "deploy", "provider_options", "metadata", "prices"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise errors.ConfigError(
                f"{spelled.get(key, key)} in {config} must be a mapping of settings, not {data[key]!r}.",
                hint="e.g. hyperparameters:\n  epochs: 3" if key == "hyperparameters" else None,
            )
    hyper = dict(data.get("hyperparameters") or {})
    deploy = dict(data.get("deploy") or {})
    flags = {
        "provider": args.provider,
        "base_model": args.model,
        "training_file": absolute_path(args.train) if args.train else None,
        "validation_file": absolute_path(args.validation) if args.validation else None,
        "validation_split": args.validation_split,
        "method": args.method,
        "grader_file": absolute_path(args.grader) if getattr(args, "grader", None) else None,
        "suffix": args.suffix,
        "seed": args.seed,
        "eval_file": absolute_path(args.eval) if args.eval else None,
        "cleanup": args.cleanup,
        "wait": args.wait,
        "cancel_on_interrupt": args.cancel_on_interrupt,
        "timeout_s": parse_duration(args.timeout) if args.timeout else None,
        "max_cost_usd": getattr(args, "max_cost", None),
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.validation:
        data.pop("validation_split", None)
    # where each setting given on the command line came from, to name it in errors
    set_by_flag = {(field,): "--" + flag.replace("_", "-") for field, flag in _FLAGS.items() if flags[field] is not None}
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("learning_rate_multiplier", args.learning_rate_multiplier)):
        if value is not None:
            hyper[key] = value
            set_by_flag[("hyperparameters", key)] = "--" + key.replace("_", "-")
    for key, value, flag in (("enabled", args.deploy, "--deploy"), ("name", args.deployment_name, "--deployment-name"),
                             ("sku", args.deployment_sku, "--deployment-sku")):
        if value is not None:
            deploy[key] = value
            set_by_flag[("deploy", key)] = flag
    data["hyperparameters"] = hyper
    data["deploy"] = deploy
    options = parse_options(args.option)
    set_by_flag.update({("provider_options", key): f"-o {key}" for key in options})
    data["provider_options"] = {**(data.get("provider_options") or {}), **options}
    data.setdefault("provider", default_provider_name())
    data.pop("providers", None)  # several providers: cloudtune.multirun starts one run per provider
    _use_state(data.pop("state", None), config)
    if isinstance(data.get("base_model"), dict):  # a per-provider model map
        data["base_model"] = model_for_provider(data["base_model"], data["provider"], config)
    missing = [flag for flag, key in (("--model", "base_model"), ("--train", "training_file")) if not data.get(key)]
    if missing:
        raise errors.ConfigError(
            f"Missing {' and '.join(missing)}: give them as flags or in the YAML config.",
            hint="cloudtune run --provider local --model HuggingFaceTB/SmolLM2-135M-Instruct --train data.jsonl",
        )
    try:
        spec = FineTuneSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, set_by_flag, spelled, config) for e in exc.errors())
        raise errors.ConfigError(f"Invalid run configuration: {problems}") from exc
    for label, path in (("training", spec.training_file), ("validation", spec.validation_file), ("eval", spec.eval_file)):
        problem = None if path is None else not_a_regular_file(path)
        if problem is not None:
            raise errors.ConfigError(f"The {label} file {path} {problem}.")
    check_options(spec.provider, spec.provider_options)  # a misspelt -o stops here, before any record
    return spec



def model_for_provider(models: dict[str, Any], provider: str, config: str | None) -> str:
    """``model: {openai: gpt-4.1-mini-2025-04-14, local: HuggingFaceTB/SmolLM2-135M-Instruct}``: the
    entry for ``provider``."""
    model = models.get(provider)
    if not isinstance(model, str) or not model:
        raise errors.ConfigError(
            f"The model map in {config or 'the config'} has no model for provider {provider} "
            f"(it names {', '.join(map(str, models)) or 'none'}).", hint=f"add  {provider}: MODEL  under model:")
    return model


def _describe(error: Any, set_by_flag: dict[tuple[str, ...], str], spelled: dict[str, str], config: str | None) -> str:
    """One pydantic error named as the user wrote the setting: ``epochs in run.yaml: ...`` or ``--epochs: ...``."""
    loc = tuple(str(part) for part in error["loc"])
    flag = next((set_by_flag[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in set_by_flag), None)
    if flag:
        where = flag
    elif loc:
        name = ".".join([spelled.get(loc[0], loc[0]), *loc[1:]])
        where = f"{name} in {config}" if config else name
    else:
        where = f"the settings in {config}" if config else "the settings"
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) else ""
    return f"{where}: {error['msg']}{shown}"
