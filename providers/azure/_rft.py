"""Reinforcement fine-tuning (``--method reinforcement``) on the Azure OpenAI route: the grader file, the
checks before upload, and the ``method`` body of the job. The rules themselves (grader types, data,
hyperparameters, hourly billing, the $5,000 pause) are :mod:`cloudtune.service_facts.azure_rft`, which
the emulator reads too.

A grader file is YAML or JSON holding one grader object as the service takes it (``type: string_check``,
``text_similarity``, ``score_model``, ``python`` or ``multi``), e.g.::

    type: string_check
    name: exact answer
    input: "{{ sample.output_text }}"
    reference: "{{ item.solution }}"
    operation: eq

RFT hyperparameters go under ``hyperparameters.extra`` in the run config (``reasoning_effort``,
``eval_interval``, ``eval_samples``, ``compute_multiplier``) beside ``epochs`` / ``batch_size`` /
``learning_rate_multiplier``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.service_facts import azure_openai as rules
from cloudtune.service_facts import azure_rft
from cloudtune.types import FineTuneSpec


def load_grader(path: Path | None) -> dict[str, Any]:
    if path is None:
        raise errors.ConfigError("--method reinforcement needs a grader: --grader grader.yaml (or grader.json).",
                                 hint=f"The grader types: {', '.join(azure_rft.GRADER_TYPES)}. Source: {azure_rft.SOURCE}.")
    path = Path(path)
    if not path.is_file():
        raise errors.ConfigError(f"The grader file {path} does not exist.")
    import yaml

    try:
        grader = (json.loads(path.read_text(encoding="utf-8")) if path.suffix.lower() == ".json"
                  else yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"The grader file {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                                 f"{exc}") from exc
    problems = azure_rft.grader_problems(grader)
    if problems:
        raise errors.ConfigError(f"The grader in {path} would be refused, so nothing was uploaded: " + "; ".join(problems),
                                 hint=f"Source: {azure_rft.SOURCE}.")
    return grader  # type: ignore[no-any-return]


def rft_hyperparameters(spec: FineTuneSpec) -> dict[str, Any]:
    hp = spec.hyperparameters
    values = {"n_epochs": hp.epochs, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier,
              **dict(hp.extra or {})}
    return {k: v for k, v in values.items() if v is not None}


def plan_reinforcement(route: Any, spec: FineTuneSpec, row: rules.BaseModel | None) -> list[str]:
    """Before any upload: the grader (locally, then the service's own ``graders/validate`` on the v1
    surface), the hyperparameters, both data files; returns the billing note (hours, the cap)."""
    grader = load_grader(getattr(spec, "grader_file", None))
    hyper = rft_hyperparameters(spec)
    problems = azure_rft.hyperparameter_problems(hyper)
    if problems:
        raise errors.ConfigError("The reinforcement hyperparameters would be refused: " + "; ".join(problems) + ".",
                                 hint=f"Source: {azure_rft.SOURCE}.")
    for label, path in (("training", spec.training_file), ("validation", spec.validation_file)):
        if path is None or not Path(path).is_file():
            continue
        found = azure_rft.data_problems(Path(path).read_bytes(), grader)
        if found:
            shown = "\n".join(f"  line {line}: {problem}" for line, problem in found)
            raise errors.DatasetError(f"The {label} data would be refused for reinforcement fine-tuning, so nothing "
                                      f"was uploaded:\n{shown}",
                                      hint="RFT examples end with a user message and carry the fields the grader "
                                           f"reads (item.*). Source: {azure_rft.SOURCE}.")
    notes = []
    if route.on_v1:
        # /openai/v1/fine_tuning/alpha/graders/validate (preview by its path; no header needed)
        route.client.with_options(max_retries=0).fine_tuning.alpha.graders.validate(grader=grader)
        notes.append(f"Grader {grader.get('name')!r} ({grader['type']}) validated by the service.")
    short = row.short if row else spec.base_model
    notes.append(azure_rft.billing_note(short))
    return notes


def reinforcement_method(spec: FineTuneSpec) -> dict[str, Any]:
    """The ``method`` body: ``{"type": "reinforcement", "reinforcement": {"grader", "hyperparameters"}}``."""
    body: dict[str, Any] = {"grader": load_grader(getattr(spec, "grader_file", None))}
    hyper = rft_hyperparameters(spec)
    if hyper:
        body["hyperparameters"] = hyper
    return {"type": "reinforcement", "reinforcement": body}
