"""Run configuration: a YAML file, overridden by flags, becomes a :class:`FineTuneSpec`.

``--provider`` alone switches the provider with everything else unchanged.
Relative paths in a YAML file are relative to that file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cloudtune import errors

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
}
PATH_FIELDS = ("training_file", "validation_file", "eval_file")


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


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise errors.ConfigError(f"Config file {path} does not exist.") from exc
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise errors.ConfigError(f"Config file {path} must hold a mapping of settings, not {type(data).__name__}.")
    data = {ALIASES.get(k, k): v for k, v in data.items()}
    for key in PATH_FIELDS:
        if data.get(key):
            p = Path(data[key]).expanduser()
            data[key] = str(p if p.is_absolute() else (Path(path).parent / p))
    if "timeout_s" in data:
        data["timeout_s"] = parse_duration(data["timeout_s"])
    if isinstance(data.get("deploy"), bool):
        data["deploy"] = {"enabled": data["deploy"]}
    return data


def parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.ConfigError(f"Provider options are KEY=VALUE, not {pair!r}.")
        options[key.strip()] = yaml.safe_load(value)
    return options


def build_spec(args: Any) -> Any:
    """Merge the YAML config (if any) with the flags into a validated FineTuneSpec."""
    from pydantic import ValidationError

    from cloudtune.registry import default_provider_name
    from cloudtune.types import FineTuneSpec

    data: dict[str, Any] = load_yaml(Path(args.config)) if getattr(args, "config", None) else {}
    for key in ("hyperparameters", "deploy", "provider_options", "metadata", "prices"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise errors.ConfigError(
                f"{key} in {args.config} must be a mapping of settings, not {data[key]!r}.",
                hint="e.g. hyperparameters:\n  epochs: 3" if key == "hyperparameters" else None,
            )
    hyper = dict(data.get("hyperparameters") or {})
    deploy = dict(data.get("deploy") or {})
    flags = {
        "provider": args.provider,
        "base_model": args.model,
        "training_file": args.train,
        "validation_file": args.validation,
        "validation_split": args.validation_split,
        "method": args.method,
        "suffix": args.suffix,
        "seed": args.seed,
        "eval_file": args.eval,
        "cleanup": args.cleanup,
        "wait": args.wait,
        "cancel_on_interrupt": args.cancel_on_interrupt,
        "timeout_s": parse_duration(args.timeout) if args.timeout else None,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.validation:
        data.pop("validation_split", None)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("learning_rate_multiplier", args.learning_rate_multiplier)):
        if value is not None:
            hyper[key] = value
    for key, value in (("enabled", args.deploy), ("name", args.deployment_name), ("sku", args.deployment_sku)):
        if value is not None:
            deploy[key] = value
    data["hyperparameters"] = hyper
    data["deploy"] = deploy
    data["provider_options"] = {**(data.get("provider_options") or {}), **parse_options(args.option)}
    data.setdefault("provider", default_provider_name())
    missing = [flag for flag, key in (("--model", "base_model"), ("--train", "training_file")) if not data.get(key)]
    if missing:
        raise errors.ConfigError(
            f"Missing {' and '.join(missing)}: give them as flags or in the YAML config.",
            hint="cloudtune run --provider local --model HuggingFaceTB/SmolLM2-135M-Instruct --train data.jsonl",
        )
    try:
        spec = FineTuneSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise errors.ConfigError(f"Invalid run configuration: {problems}") from exc
    for label, path in (("training", spec.training_file), ("validation", spec.validation_file), ("eval", spec.eval_file)):
        if path is not None and not Path(path).is_file():
            raise errors.ConfigError(f"The {label} file {path} does not exist.")
    return spec
