"""``cloudtune providers``: the fine-tunable models of each provider with their dates, as rows
(for ``--json``) and as a plain-text table (for people). Everything comes from the dated tables in
this package and :mod:`cloudtune.catalog`; each provider's facts say which rows are its own."""

from __future__ import annotations

from typing import Any

from cloudtune.service_facts import azure_openai, azure_serverless, openai_lifecycle

COLUMNS = ("model", "route", "status", "where / how", "dates")


def openai_rows() -> list[dict[str, Any]]:
    from cloudtune.catalog import MODELS

    today = openai_lifecycle.today()
    rows = []
    for info in MODELS.get("openai", ()):
        stops = openai_lifecycle.table_shutdown(info.name)
        gone = stops is not None and stops <= today
        dates = (f"shut down {stops}" if gone else
                 f"job creation ends {openai_lifecycle.JOB_CREATION_ENDS}; fine-tunes stop serving {stops}" if stops else
                 f"job creation ends {openai_lifecycle.JOB_CREATION_ENDS}")
        rows.append({"model": info.name, "route": "openai", "status": "shut down" if gone else "fine-tunable",
                     "where": ", ".join(info.methods), "dates": dates, "instead": "--provider azure" if gone else None,
                     "source": openai_lifecycle.SOURCE})
    return rows


def azure_rows() -> list[dict[str, Any]]:
    rows = []
    for model in azure_openai.BASE_MODELS:
        types = [t for t in azure_openai.TRAINING_TYPES if model.training_regions(t)]
        rows.append({"model": model.dated_id, "route": "azure-openai", "status": "fine-tunable",
                     "where": f"training {'/'.join(types)}; Standard in {', '.join(model.standard_regions)}",
                     "dates": f"DeveloperTier deployments live {azure_openai.DEVELOPER_TIER_LIFETIME_H} h; idle "
                              f"deployments deleted after {azure_openai.IDLE_DELETION_DAYS} days",
                     "instead": None, "source": azure_openai.MODELS_SOURCE})
    for model in azure_serverless.FINE_TUNABLE:
        rows.append({"model": model.name, "route": "serverless", "status": "fine-tunable",
                     "where": ", ".join(model.regions) + (" (marketplace)" if model.marketplace else ""),
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": None, "source": azure_serverless.REGIONS_SOURCE})
    for name in azure_serverless.NOT_FINE_TUNABLE:
        rows.append({"model": name, "route": "serverless", "status": "not fine-tunable", "where": "-",
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": "Phi-4-mini-instruct",
                     "source": azure_serverless.REGIONS_SOURCE})
    for retired in azure_serverless.RETIRED:
        rows.append({"model": f"{retired.prefix}*", "route": "serverless", "status": "retired",
                     "where": f"use {retired.successor} (or --provider local)", "dates": f"retired {retired.retired_on}",
                     "instead": retired.successor, "source": azure_serverless.RETIREMENT_SOURCE})
    return rows


def model_rows(provider: str) -> list[dict[str, Any]]:
    """The rows the provider declares (``facts.model_rows``, or one per model of its table)."""
    from cloudtune.registry import provider_facts

    return provider_facts(provider).rows(provider)


def render(rows: list[dict[str, Any]], indent: str = "      ") -> list[str]:
    """Aligned plain-text lines: model | route | status | where / how | dates."""
    if not rows:
        return []
    cells = [(r["model"], r["route"], r["status"], r["where"], r["dates"]) for r in rows]
    widths = [max(len(str(c[i])) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in [COLUMNS, *cells]:
        lines.append(indent + "  ".join(str(v).ljust(w) for v, w in zip(row[:-1], widths)) + "  " + str(row[-1]))
    lines.insert(1, indent + "  ".join("-" * w for w in widths) + "  " + "-" * len(COLUMNS[-1]))
    sources = sorted({r["source"] for r in rows if r.get("source")})
    lines += [f"{indent}source: {s}" for s in sources]
    return lines
