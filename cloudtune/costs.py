"""Know the bill before paying it: what ``run`` prints and enforces before anything is uploaded.

:func:`before_upload` is called once by the pipeline's validation step. It

1. asks the provider what it would refuse and what the user should read first
   (:meth:`~cloudtune.provider.Provider.plan`: resolved model ids, training type, shut-down dates;
   it raises :class:`~cloudtune.errors.CapabilityError`, exit 4, for what the service would refuse);
2. prints the estimated trained tokens and training cost (the dataset estimate, priced from the
   dated model table the provider declares in its ``facts``, read through :mod:`cloudtune.catalog`,
   with the price's date and source), and the hourly hosting cost of the deployment the run will make
   (:meth:`~cloudtune.provider.Provider.hosting_note`); a provider whose facts say it is not hosted
   runs on your hardware: no bill;
3. refuses with :class:`~cloudtune.errors.QuotaExceeded` (exit 4) when ``--max-cost`` is below the
   estimate, or when a budget is set and no price is known to check it against.

Together's CLI shows an estimate before creating a job; nobody enforces a budget - cloudtune does,
before the first byte is uploaded.
"""

from __future__ import annotations

from typing import Any

from cloudtune import errors


def estimate_line(report: Any) -> str | None:
    estimate = getattr(report, "estimate", None)
    return estimate.describe() if estimate is not None else None


def before_upload(run: Any, provider: Any, reporter: Any, report: Any) -> float | None:
    """Print the plan and the estimate; raise when the budget is exceeded. Returns the estimated
    training cost in USD (None when unknown)."""
    spec = run.spec
    for note in provider.plan(spec) or []:
        reporter.step(run, note)
    estimate = getattr(report, "estimate", None)
    cost = estimate.cost_usd if estimate is not None else None
    hosted = provider.facts.hosted
    if cost is None and not hosted:
        cost = 0.0  # your own hardware
    line = estimate_line(report)
    if line is not None:
        reporter.step(run, line if hosted else f"{line} (local: no bill)")
    if spec.deploy.enabled:
        note = provider.hosting_note(spec)
        if note:
            reporter.step(run, f"Hosting: {note}")
    budget = getattr(spec, "max_cost_usd", None)
    billing = provider.hourly_billing(spec)
    if billing is not None:  # billed per training hour (Azure RFT): the token estimate does not apply
        _check_hourly_budget(spec, budget, *billing)
        return None
    if budget is not None:
        if cost is None:
            raise errors.QuotaExceeded(
                f"--max-cost {budget:g} was given but no training price is known for {spec.base_model} on "
                f"{spec.provider}, so the budget cannot be checked. Nothing was uploaded.",
                hint="Add the price (USD per 1M training tokens) under prices: in the run config, or drop --max-cost.",
                code="cost_unknown")
        if cost > budget:
            raise errors.QuotaExceeded(
                f"The estimated training cost ${cost:,.2f} is above --max-cost ${budget:,.2f}. Nothing was uploaded.",
                hint=f"{line}. Lower --epochs, trim the data, pick a cheaper model, or raise --max-cost.",
                code="max_cost_exceeded")
    return cost


def _check_hourly_budget(spec: Any, budget: float | None, usd_per_hour: float | None, pause_at_usd: float) -> None:
    """A job billed per training hour reports no running bill, so cloudtune cannot stop it at a budget of
    its own; the one ceiling that holds is the service's pause at ``pause_at_usd``. A --max-cost below it
    is refused before upload (exit 4) rather than promised."""
    if budget is None or budget >= pause_at_usd:
        return
    hours = f" ({budget / usd_per_hour:.2f} training hours at ${usd_per_hour:,.0f}/hour)" if usd_per_hour else ""
    raise errors.QuotaExceeded(
        f"--max-cost ${budget:,.2f}{hours} cannot be guaranteed: {spec.base_model} is billed per training hour, the "
        f"service reports no running bill, and its own pause comes at ${pause_at_usd:,.0f}. Nothing was uploaded.",
        hint=f"Use --max-cost {pause_at_usd:.0f} (the service pauses the job there and keeps a deployable checkpoint), "
             "or drop --max-cost and watch the job (`cloudtune status RUN`, `cloudtune pause RUN`).",
        code="max_cost_not_enforceable")
