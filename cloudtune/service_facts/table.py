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
    from datetime import date

    today = openai_lifecycle.today()
    rows = []
    for model in azure_openai.BASE_MODELS:
        types = [t for t in azure_openai.TRAINING_TYPES if model.training_regions(t)]
        methods = "/".join({"supervised": "SFT", "dpo": "DPO", "reinforcement": "RFT"}[m] for m in model.methods)
        if model.open_weight:
            where = (f"{methods}; training {'/'.join(types)}; jobs API on Foundry resources only "
                     "(a classic hub: the serverless route, where it lists the model)")
        else:
            deploy = azure_openai.STANDARD_DEPLOYMENT_REGIONS.get(model.short, ())
            where = (f"{methods}; training {'/'.join(types)}; Standard training in {', '.join(model.standard_regions)}; "
                     f"Standard deployments in {', '.join(deploy) or 'none'}")
        retiring = azure_openai.retirement(model.short)
        dates = (f"fine-tunes stop serving {retiring.deployments_retire}; training (existing customers) until no "
                 f"earlier than {retiring.training_no_earlier_than}" if retiring else f"listed {azure_openai.RULES_AS_OF}")
        if retiring and retiring.deployments_retire <= today:
            status = "retired"
        else:
            status = "fine-tunable" + (" (by invitation)" if model.gated else "")
        rows.append({"model": model.dated_id, "route": "azure-openai", "status": status, "where": where,
                     "dates": dates + f"; DeveloperTier deployments live {azure_openai.DEVELOPER_TIER_LIFETIME_H} h; "
                              f"idle deployments deleted after {azure_openai.IDLE_DELETION_DAYS} days",
                     "instead": None, "source": azure_openai.RETIREMENT_SOURCE if retiring else azure_openai.MODELS_SOURCE})
    for model in azure_serverless.FINE_TUNABLE:
        also = azure_openai.base_model(model.name)
        why = (" (also on the jobs API on a Foundry resource: -o route=openai)" if also is not None and also.open_weight
               else " (only this route offers it)")
        rows.append({"model": model.name, "route": "serverless", "status": "fine-tunable",
                     "where": ", ".join(model.regions) + (" (marketplace)" if model.marketplace else "") + why,
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": None, "source": azure_serverless.REGIONS_SOURCE})
    for name in azure_serverless.NOT_FINE_TUNABLE:
        rows.append({"model": name, "route": "serverless", "status": "not fine-tunable", "where": "-",
                     "dates": f"listed {azure_serverless.AS_OF}", "instead": "Phi-4-mini-instruct",
                     "source": azure_serverless.REGIONS_SOURCE})
    for retired in azure_serverless.RETIRED:
        gone = date.fromisoformat(retired.retired_on) <= today
        rows.append({"model": f"{retired.prefix}*", "route": "serverless", "status": "retired" if gone else "retiring",
                     "where": f"use {retired.successor} (or --provider local)",
                     "dates": f"retired {retired.retired_on}" if gone else f"retires {retired.retired_on}",
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
