"""Reinforcement fine-tuning (RFT) on Azure OpenAI as data and pure checks: which models take it, what a
grader may look like, what RFT data must hold, which hyperparameters the service takes, and how it bills.
Read by the Azure provider (everything refused before upload, exit 4 / 3) and by the Azure emulator
(which refuses the same requests and pauses a job at the billing cap), so both move together.

Sources (MicrosoftDocs/azure-ai-docs, ``articles/foundry/openai/``, read 2026-12-04):

* ``includes/how-to-reinforcement-fine-tuning-content.md`` (ms.date 03/19/2026): o4-mini (2025-04-16) GA,
  gpt-5 (2025-08-07) private preview; the last message of an example has the ``user`` role, extra fields
  feed the grader, a training AND a validation file are required; one grader (several through ``multi``);
  the grader types and their fields; templates ``{{ sample.* }}`` / ``{{ item.* }}``; model graders
  ``gpt-4o-2024-08-06`` and ``o3-mini-2025-01-31``; python source up to 256 KB defining ``grade(sample, item)``;
  RFT hyperparameters ``eval_interval``, ``eval_samples``, ``compute_multiplier``, ``reasoning_effort``
  (low / medium / high) beside the supervised ones; the job pauses at $5,000 (training + grading), the
  latest checkpoint is deployable, resuming bills with no further limit.
* ``includes/how-to-fine-tuning-cost-management-content.md`` (03/19/2026): $100 per hour of core training
  for o4-mini-2025-04-16, time rounded to two decimals; model-grader tokens billed separately.
* The request shapes: ``/work/shared/specs/azure-openai-v1.yaml`` (``AzureFineTuneReinforcementMethod``,
  ``OpenAI.FineTuneReinforcementHyperparameters``, ``/fine_tuning/alpha/graders/validate`` and ``/run``,
  preview by their ``alpha`` path, no header needed).
"""

from __future__ import annotations

import json
import re
from typing import Any

SOURCE = ("MicrosoftDocs/azure-ai-docs articles/foundry/openai/includes/how-to-reinforcement-fine-tuning-content.md "
          "(ms.date 03/19/2026)")
COST_SOURCE = ("MicrosoftDocs/azure-ai-docs articles/foundry/openai/includes/how-to-fine-tuning-cost-management-content.md "
               "(ms.date 03/19/2026)")

#: USD per hour of core training (only o4-mini is priced in the docs; gpt-5's RFT is by invitation)
USD_PER_TRAINING_HOUR = {"o4-mini": 100.0}
#: the service pauses an RFT job when its training + grading bill reaches this
PAUSE_AT_USD = 5000.0

GRADER_TYPES = ("string_check", "text_similarity", "score_model", "python", "multi")
STRING_CHECK_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4",
                      "rouge_5", "rouge_l")
GRADER_MODELS = ("gpt-4o-2024-08-06", "o3-mini-2025-01-31")
PYTHON_SOURCE_MAX_BYTES = 256 * 1024
MULTI_FUNCTIONS = ("min", "max", "abs", "floor", "ceil", "exp", "sqrt", "log")
TEMPLATE_NAMESPACES = ("sample", "item")
REASONING_EFFORTS = ("low", "medium", "high")
#: hyperparameters the reinforcement method takes (the supervised three and the RFT ones)
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "eval_interval", "eval_samples",
                   "compute_multiplier", "reasoning_effort")
_REQUIRED = {"string_check": ("name", "input", "reference", "operation"),
             "text_similarity": ("name", "input", "reference", "evaluation_metric"),
             "score_model": ("name", "model", "input"), "python": ("name", "source"),
             "multi": ("name", "graders", "calculate_output")}
_TEMPLATE = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return _TEMPLATE.findall(value)
    if isinstance(value, list):
        return [t for item in value for t in _templates(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _templates(item)]
    return []


def grader_problems(grader: Any, where: str = "grader") -> list[str]:
    """Every reason the service would refuse this grader (empty when it is valid)."""
    if not isinstance(grader, dict):
        return [f"{where} must be an object with a 'type'"]
    kind = grader.get("type")
    if kind not in GRADER_TYPES:
        return [f"{where}.type {kind!r} is not a grader type the service takes ({', '.join(GRADER_TYPES)})"]
    problems = [f"{where}.{field} is required for a {kind} grader" for field in _REQUIRED[kind]
                if grader.get(field) in (None, "", [], {})]
    for reference in _templates({k: v for k, v in grader.items() if k not in ("source", "graders")}):
        namespace = reference.split(".", 1)[0].split("[", 1)[0]
        if namespace not in TEMPLATE_NAMESPACES or "." not in reference:
            problems.append(f"{where}: template {{{{ {reference} }}}} must be namespaced sample.* or item.*")
    if kind == "string_check" and grader.get("operation") not in (None, *STRING_CHECK_OPERATIONS):
        problems.append(f"{where}.operation must be one of {', '.join(STRING_CHECK_OPERATIONS)}")
    if kind == "text_similarity" and grader.get("evaluation_metric") not in (None, *SIMILARITY_METRICS):
        problems.append(f"{where}.evaluation_metric must be one of {', '.join(SIMILARITY_METRICS)}")
    if kind == "score_model":
        if grader.get("model") and grader["model"] not in GRADER_MODELS:
            problems.append(f"{where}.model {grader['model']!r} cannot grade; use {' or '.join(GRADER_MODELS)}")
        if grader.get("input") and not isinstance(grader["input"], list):
            problems.append(f"{where}.input must be a list of messages")
        span = grader.get("range")
        if span is not None and not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, (int, float)) for x in span)
                                     and span[0] < span[1]):
            problems.append(f"{where}.range must be [low, high] with low < high")
    if kind == "python" and isinstance(grader.get("source"), str):
        source = grader["source"]
        if len(source.encode()) > PYTHON_SOURCE_MAX_BYTES:
            problems.append(f"{where}.source is over the {PYTHON_SOURCE_MAX_BYTES // 1024} KB the service runs")
        if not re.search(r"^def\s+grade\s*\(\s*\w+\s*,\s*\w+\s*\)\s*(->[^:]*)?:", source, re.MULTILINE):
            problems.append(f"{where}.source must define grade(sample, item)")
        else:
            try:
                compile(source, f"<{where}.source>", "exec")
            except SyntaxError as exc:
                problems.append(f"{where}.source does not compile: {exc.msg} (line {exc.lineno})")
    if kind == "multi" and isinstance(grader.get("graders"), dict):
        for key, inner in grader["graders"].items():
            if isinstance(inner, dict) and inner.get("type") == "multi":
                problems.append(f"{where}.graders.{key}: a multi grader cannot nest another multi grader")
            else:
                problems.extend(grader_problems(inner, f"{where}.graders.{key}"))
        problems.extend(_formula_problems(str(grader.get("calculate_output") or ""), tuple(grader["graders"]), where))
    return problems


def _formula_problems(formula: str, names: tuple[str, ...], where: str) -> list[str]:
    if not formula:
        return []
    if re.search(r"[^\w\s.+\-*/^(),]", formula):
        return [f"{where}.calculate_output may use + - * / ^, parentheses and {', '.join(MULTI_FUNCTIONS)} only"]
    unknown = [w for w in re.findall(r"[A-Za-z_]\w*", formula) if w not in names and w not in MULTI_FUNCTIONS]
    return [f"{where}.calculate_output names {w!r}, which is neither a grader key nor a function" for w in unknown]


def item_fields(grader: Any) -> set[str]:
    """The top-level ``item.*`` fields the grader's templates read (the data must carry them)."""
    found: set[str] = set()
    if isinstance(grader, dict):
        for reference in _templates({k: v for k, v in grader.items() if k not in ("source", "graders")}):
            if reference.startswith("item."):
                found.add(re.split(r"[.\[]", reference[5:], maxsplit=1)[0])
        for inner in (grader.get("graders") or {}).values() if isinstance(grader.get("graders"), dict) else ():
            found |= item_fields(inner)
    return found


def example_problem(example: Any, needed: set[str]) -> str | None:
    """Why the service would refuse one RFT example (None when fine)."""
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list) or not example["messages"]:
        return "each example needs a non-empty 'messages' list"
    last = example["messages"][-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return "the last message of an RFT example must have the 'user' role (the model writes the answer)"
    missing = sorted(f for f in needed if f not in example)
    if missing:
        return f"the grader reads item.{', item.'.join(missing)}, which this example lacks"
    return None


def data_problems(content: bytes, grader: Any, limit: int = 5) -> list[tuple[int, str]]:
    """(line, problem) for the first ``limit`` RFT examples the service would refuse."""
    needed = item_fields(grader)
    problems: list[tuple[int, str]] = []
    text = content.decode("utf-8", "replace").lstrip("\ufeff")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            problems.append((number, "invalid JSON"))
        else:
            problem = example_problem(example, needed)
            if problem is not None:
                problems.append((number, problem))
        if len(problems) >= limit:
            break
    return problems


def hyperparameter_problems(values: dict[str, Any]) -> list[str]:
    problems = [f"{name} is not a reinforcement hyperparameter (the service takes {', '.join(HYPERPARAMETERS)})"
                for name in values if name not in HYPERPARAMETERS]
    effort = values.get("reasoning_effort")
    if effort is not None and effort not in (*REASONING_EFFORTS, "default"):
        problems.append(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}")
    for name in ("eval_interval", "eval_samples"):
        value = values.get(name)
        if value not in (None, "auto") and not (isinstance(value, int) and value >= 1):
            problems.append(f"{name} must be a whole number of at least 1, or auto")
    value = values.get("compute_multiplier")
    if value not in (None, "auto") and not (isinstance(value, (int, float)) and value > 0):
        problems.append("compute_multiplier must be a positive number, or auto")
    return problems


#: where reinforcement fine-tuning runs today: Azure OpenAI (OpenAI shut o4-mini down on 2026-10-23,
#: cloudtune.service_facts.openai_lifecycle; the local backend has no RFT)
AZURE_ROUTE = ("--provider azure --model o4-mini --method reinforcement --grader grader.yaml "
               "(o4-mini-2025-04-16, GA; gpt-5-2025-08-07 by invitation)")


def refusal_elsewhere(provider: str, why: str | None = None) -> tuple[str, str]:
    """(message, hint) for a provider that has no reinforcement fine-tuning; ``why`` is the
    provider's own reason (its facts module says it), else a generic one."""
    why = why or f"{provider} has no reinforcement fine-tuning"
    return (f"--method reinforcement cannot run on --provider {provider}: {why}. Nothing was uploaded.",
            f"Run it on Azure OpenAI: `{AZURE_ROUTE}`. Source: {SOURCE}.")


def hourly_price(short: str) -> float | None:
    return USD_PER_TRAINING_HOUR.get(short)


def billing_note(short: str) -> str:
    """What an RFT job of ``short`` will bill, in hours, for the estimate line."""
    price = hourly_price(short)
    if price is None:
        return (f"Reinforcement fine-tuning is billed per training hour; no hourly price for {short} is published "
                f"({COST_SOURCE}). The service pauses the job at ${PAUSE_AT_USD:,.0f}.")
    cap_h = PAUSE_AT_USD / price
    return (f"Reinforcement fine-tuning of {short} is billed ${price:,.0f} per training hour (queueing, validation and "
            f"safety checks are free; model-grader tokens are billed apart). The service pauses the job at "
            f"${PAUSE_AT_USD:,.0f} ({cap_h:.0f} training hours) and keeps a deployable checkpoint. Source: {COST_SOURCE}.")
