"""``cloudtune providers``: the fine-tunable models of each provider with their dates, as rows
(for ``--json``) and as a plain-text table (for people). Each provider declares its own rows in its
facts (``facts.model_rows``, built from the dated tables of this package); this module asks for them
and renders them."""

from __future__ import annotations

from typing import Any

COLUMNS = ("model", "route", "status", "where / how", "dates")


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
