"""Asking targets the eval questions: bounded concurrency, transient errors retried with
cloudtune's retry rules, and a failed example counted and kept, never raised."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune import timescale
from cloudtune.compare import metrics
from cloudtune.compare.answer_cache import AnswerCache
from cloudtune.compare.evalset import EvalExample, load_eval_file, with_prefix

if TYPE_CHECKING:
    from cloudtune.provider import Provider

# The same decoding for every target, recorded in the report.
DECODING: dict[str, Any] = {"temperature": 0, "max_tokens": 128}


def default_concurrency(provider_name: str) -> int:
    """The requests at once the provider declares (``facts.request_concurrency``)."""
    from cloudtune.registry import provider_facts

    return provider_facts(provider_name).request_concurrency


@dataclass
class Target:
    label: str
    provider: Provider
    deployment: str
    kind: str = "fine-tuned"  # fine-tuned | base | few-shot | deployment
    provider_name: str = ""
    run_id: str | None = None
    prefix: list[dict[str, Any]] = field(default_factory=list)  # few-shot turns
    price: tuple[float, float] | None = None  # USD per 1M (input, output) tokens
    price_note: str | None = None
    model: str | None = None  # what the deployment serves: the answer cache's key (None: not cached)


@dataclass
class Answer:
    index: int
    text: str | None
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # reused from the answer cache, not asked again

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class TargetReport:
    label: str
    answers: list[Answer] = field(default_factory=list)
    target: Target | None = None

    def answered(self) -> list[Answer]:
        return [a for a in self.answers if a.ok]

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]

    def summary(self) -> dict[str, Any]:
        done = self.answered()
        latencies = [a.latency_s for a in done]
        prompt_tokens = sum(a.prompt_tokens for a in done)
        completion_tokens = sum(a.completion_tokens for a in done)
        target = self.target
        out: dict[str, Any] = {
            "label": self.label,
            "kind": target.kind if target else None,
            "provider": target.provider_name if target else None,
            "deployment": target.deployment if target else None,
            "run_id": target.run_id if target else None,
            "examples": len(self.answers),
            "answered": len(done),
            "failed_requests": len(self.answers) - len(done),
            "cached_answers": sum(a.cached for a in done),
        }
        for name in metrics.SCORES:
            value = metrics.mean([a.scores[name] for a in done])
            out[name] = round(value, 4) if value is not None else None
        mean_latency, p95 = metrics.mean(latencies), metrics.percentile(latencies, 95)
        cost = metrics.inference_cost(prompt_tokens, completion_tokens, target.price if target else None)
        out.update({
            "mean_latency_s": round(mean_latency, 3) if mean_latency is not None else None,
            "p95_latency_s": round(p95, 3) if p95 is not None else None,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "inference_cost_usd": round(cost, 6) if cost is not None else None,
            "price_per_1m_tokens": list(target.price) if target and target.price else None,
            "price_note": target.price_note if target else None,
        })
        return out

    def headline(self) -> str:
        s = self.summary()
        failed = f", {s['failed_requests']} failed" if s["failed_requests"] else ""
        if s["answered"] == 0:
            return f"{self.label}: no answers ({s['failed_requests']} failed requests)"
        return (f"{self.label}: exact match {s['exact_match']:.0%}, token F1 {s['token_f1']:.2f}, "
                f"ROUGE-L {s['rouge_l']:.2f} on {s['answered']} examples{failed}")


def ask(target: Target, example: EvalExample, index: int, params: dict[str, Any],
        sleep: Callable[[float], None] = timescale.sleep, cache: AnswerCache | None = None) -> Answer:
    """One question, retried on transient errors; any failure becomes a recorded answer."""
    from cloudtune.retry import call_with_retries

    messages = with_prefix(example.prompt, target.prefix)
    key = AnswerCache.key(target.provider_name, target.model, messages, params) if cache and target.model else None
    found = cache.get(key) if cache and key else None
    if found is not None:
        return Answer(index, found["text"], float(found.get("latency_s") or 0.0), int(found.get("prompt_tokens") or 0),
                      int(found.get("completion_tokens") or 0), scores=metrics.score_answer(found["text"],
                                                                                            example.reference),
                      cached=True)
    started = time.perf_counter()
    try:
        result = call_with_retries(lambda: target.provider.chat(target.deployment, messages, **params), sleep=sleep,
                                   translate=target.provider.translate_error)
    except Exception as exc:  # noqa: BLE001 - one failing example must not sink the comparison
        return Answer(index, None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    latency = result.latency_s if result.latency_s is not None else time.perf_counter() - started
    if cache and key and result.content is not None:
        cache.put(key, {"text": result.content, "latency_s": latency, "prompt_tokens": result.prompt_tokens or 0,
                        "completion_tokens": result.completion_tokens or 0})
    return Answer(index, result.content, latency, result.prompt_tokens or 0, result.completion_tokens or 0,
                  scores=metrics.score_answer(result.content, example.reference))


def evaluate_target(target: Target, examples: list[EvalExample], *, concurrency: int | None = None,
                    sleep: Callable[[float], None] = timescale.sleep, cache: AnswerCache | None = None,
                    **chat_params: Any) -> TargetReport:
    params = {**DECODING, **chat_params}
    workers = max(1, concurrency or default_concurrency(target.provider_name))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ask-{target.label}") as pool:
        answers = list(pool.map(lambda item: ask(target, item[1], item[0], params, sleep, cache),
                                enumerate(examples)))
    return TargetReport(target.label, answers, target)


def evaluate_deployment(provider: Provider, deployment: str, eval_file: Path, *, model: str | None = None,
                        **chat_params: Any) -> TargetReport:
    """What ``cloudtune run`` with ``eval`` records: one deployment on one eval file; with
    ``model`` (what the deployment serves) its answers go to the answer cache for ``compare``."""
    name = getattr(provider, "name", "")
    target = Target(deployment, provider, deployment, provider_name=name, model=model)
    return evaluate_target(target, load_eval_file(eval_file), cache=AnswerCache() if model else None, **chat_params)
