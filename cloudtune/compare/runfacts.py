"""What a run's training cost and looked like: time, trained tokens, cost, final losses and
the loss curves, read from the provider's job and its events (every provider reports
metrics as events whose data carry ``step`` and ``train_loss`` / ``valid_loss``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtune.provider import Provider
    from cloudtune.types import Run

EVENT_PAGES = 200  # at most 20,000 events read per run


def live_deployment(run: Run) -> str | None:
    """The run's current deployment name, for both shapes of run records: the typed
    ``resources`` list (its resource records) and the older ``deployments`` list of names."""
    accessor = getattr(run, "live_deployment", None)
    if callable(accessor):
        found = accessor()
        return getattr(found, "id", found)
    resources = getattr(run, "resources", None)
    if resources:
        live = [r for r in resources if str(getattr(r, "kind", "")) == "deployment"
                and str(getattr(r, "state", "")) in ("owned", "intended")]
        if live:
            return str(live[-1].id)
    names = getattr(run, "deployments", None) or []
    return names[-1] if names else None


@dataclass
class RunFacts:
    run_id: str
    provider: str
    base_model: str
    fine_tuned_model: str | None
    status: str
    training_time_s: float | None = None
    trained_tokens: int | None = None
    training_cost_usd: float | None = None
    training_price_note: str | None = None
    final_train_loss: float | None = None
    final_valid_loss: float | None = None
    epochs: float | None = None  # what the run trained for (the spec, else the job's reported epochs)
    total_steps: float | None = None  # the job's total, else the last step reported
    train_curve: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)
    valid_curve: list[tuple[float, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _events(provider: Provider, job_id: str) -> list[Any]:
    out: list[Any] = []
    cursor = None
    for _ in range(EVENT_PAGES):
        page = provider.list_events(job_id, after=cursor, limit=100)
        if not page or page[-1].id == cursor:
            break
        out.extend(page)
        cursor = page[-1].id
        if len(page) < 100:
            break
    return out


def _curves(events: list[Any]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    train: dict[float, float] = {}
    valid: dict[float, float] = {}
    for event in events:
        data = event.data or {}
        step = data.get("step", data.get("step_number"))
        if not isinstance(step, (int, float)):
            continue
        for key, curve in (("train_loss", train), ("valid_loss", valid)):
            value = data.get(key)
            if isinstance(value, (int, float)):
                curve[float(step)] = float(value)
    return sorted(train.items()), sorted(valid.items())


def run_facts(run: Run, provider: Provider) -> RunFacts:
    """Figures of ``run``; anything the provider cannot tell is left None and noted."""
    from cloudtune.catalog import lookup_model, price_for

    facts = RunFacts(run.run_id, run.provider, run.spec.base_model, run.fine_tuned_model, str(run.status))
    if not run.job_id:
        facts.problems.append("the run has no job")
        return facts
    try:
        job = provider.get_job(run.job_id)
    except Exception as exc:  # noqa: BLE001 - training figures are optional in a comparison
        facts.problems.append(f"job {run.job_id}: {exc}")
        return facts
    if job.created_at and job.finished_at:
        facts.training_time_s = round((job.finished_at - job.created_at).total_seconds(), 1)
    facts.trained_tokens = job.trained_tokens
    price, date, source = price_for(lookup_model(run.provider, run.spec.base_model), run.spec.prices)
    if not provider.facts.hosted:
        facts.training_price_note = "local: your hardware, no price"
    elif price is not None and job.trained_tokens is not None:
        facts.training_cost_usd = round(job.trained_tokens * price / 1_000_000, 4)
        facts.training_price_note = f"USD {price}/1M training tokens ({date}, {source})"
    else:
        facts.training_price_note = "no training price known for this model (pass prices: in the spec)"
    try:
        facts.train_curve, facts.valid_curve = _curves(_events(provider, run.job_id))
    except Exception as exc:  # noqa: BLE001
        facts.problems.append(f"events: {exc}")
    metrics = job.metrics or {}
    spec_epochs = getattr(getattr(run.spec, "hyperparameters", None), "epochs", None)
    facts.epochs = float(spec_epochs or metrics.get("epochs") or 0) or None
    last_step = max((s for s, _ in facts.train_curve + facts.valid_curve), default=None)
    facts.total_steps = float(metrics.get("total_steps") or 0) or last_step
    facts.final_train_loss = metrics.get("train_loss", facts.train_curve[-1][1] if facts.train_curve else None)
    facts.final_valid_loss = metrics.get("valid_loss", facts.valid_curve[-1][1] if facts.valid_curve else None)
    return facts
