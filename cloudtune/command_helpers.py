"""What every run-level command shares: the signal guard, loading and locking a run, its work
directory, and how a command ends (the run's summary or its JSON document). Commands import
these from here, never from each other."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudtune import errors, interrupts
from cloudtune.config import parse_duration
from cloudtune.ledger import cloudtune_home
from cloudtune.locks import RunLock
from cloudtune.output import emit_json, run_document, say
from cloudtune.state import StateStore, open_state
from cloudtune.types import Run


class Signalled(KeyboardInterrupt):
    """What the signal handler raises. A ``KeyboardInterrupt`` (not an ``Exception``) on purpose:
    the signal can land inside SDK code whose ``except Exception`` would otherwise swallow it (and
    retry), leaving a SIGTERMed process waiting on. :func:`interruptible` turns it into
    :class:`errors.Interrupted` once it has unwound to our code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name

    def as_error(self) -> errors.Interrupted:
        return errors.Interrupted(f"Interrupted by {self.signal_name}.",
                                  hint="`cloudtune resume RUN` continues where it stopped.")


def as_interrupted(exc: BaseException) -> errors.Interrupted:
    interrupts.consume()  # taken in: the cancel and cleanup that follow may wait
    if isinstance(exc, errors.Interrupted):
        return exc
    if isinstance(exc, Signalled):
        return exc.as_error()
    return errors.Interrupted("Interrupted.", hint="`cloudtune resume RUN` continues where it stopped.")


@contextmanager
def interruptible() -> Iterator[None]:
    """First SIGINT/SIGTERM interrupts the command (the run records it and applies its cleanup
    policy) as :class:`errors.Interrupted`; a second one exits at once - the ledger is consistent
    at any instant."""
    count = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        count["n"] += 1
        if count["n"] > 1:
            os._exit(errors.EXIT_INTERRUPTED)
        interrupts.deliver(Signalled(signum))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupts.consume()
    try:
        yield
        # the handler raises where the main thread is; a finalizer or an extension may have eaten it
        # (interrupts.py): pending still, so it ends the block as it would have
        interrupts.raise_if_lost()
    except Signalled as exc:
        raise exc.as_error() from None
    except BaseException as exc:
        lost = interrupts.pending()
        if isinstance(lost, Signalled):  # the interruption came out as another error: it is what happened
            raise lost.as_error() from exc
        raise
    finally:
        interrupts.consume()
        for sig, old in previous.items():
            signal.signal(sig, old)


def finish(args: argparse.Namespace, run: Run, reporter: Any, **extra: Any) -> int:
    reporter.close()
    code = {"succeeded": 0, "active": 0, "failed": 1, "cancelled": 1}.get(run.status, 1)
    if getattr(args, "json", False):
        emit_json(run_document(run, exit_code=code, **extra))
    else:
        say("\n".join(describe_run(run)), sys.stdout)
    return code


def load_run(run_id: str | None) -> tuple[StateStore, Run]:
    ledger = open_state()
    run_id = ledger.latest_run_id() if run_id is None else run_id  # "" is a selector (refused), not "latest"
    if run_id is None:
        raise errors.InvalidInput("There are no runs yet.", hint="Start one with `cloudtune run`.")
    return ledger, ledger.get_run(run_id)


def describe_run(run: Run) -> list[str]:
    """The plain-text summary every run-level command prints."""
    lines = [f"run {run.run_id}: {run.status} (step {run.step})"]
    if run.job_id:
        lines.append(f"  job:        {run.job_id} ({run.job_state})")
    if run.fine_tuned_model:
        lines.append(f"  model:      {run.fine_tuned_model}")
    if run.deployment_names:
        lines.append(f"  deployment: {', '.join(run.deployment_names)}")
    for name, how in run.endpoints().items():
        key = f" (key: `{how['key_command']}`)" if how.get("key_command") else ""
        lines.append(f"  endpoint:   {name} at {how['endpoint_url']}{key}")
    if run.smoke_test:
        lines.append(f"  smoke test: {run.smoke_test.strip()[:200]!r}")
    if run.evaluation:
        e = run.evaluation
        lines.append(f"  evaluation: exact match {e['exact_match']:.0%}, token F1 {e['token_f1']:.2f} on {e['examples']}")
    for record in run.cleanups:
        lines.append(f"  cleanup:    {record.at:%Y-%m-%d %H:%M} ({record.reason}): {record.summary()}")
    if run.foreign:
        lines.append(f"  not ours:   {', '.join(run.foreign)} (never deleted by this run)")
    if run.error:
        lines.append(f"  error:      {run.error.message}")
        if run.error.cleanup_error:
            lines.append(f"  cleanup error: {run.error.cleanup_error}")
    return lines


def wait_lock_s(args: argparse.Namespace) -> float | None:
    value = getattr(args, "wait_lock", None)
    return parse_duration(value) if value is not None else None


@contextmanager
def locked_run(args: argparse.Namespace, run_id: str | None = None) -> Iterator[tuple[StateStore, Run]]:
    """Resolve the run, take its lock (one driver per run), then read it again under the lock,
    so nothing another process wrote before we got the lock is overwritten."""
    ledger, run = load_run(run_id if run_id is not None else args.run_id)
    with RunLock(run.run_id, wait_s=wait_lock_s(args)):
        yield ledger, ledger.get_run(run.run_id)


def workdir_for(run_id: str) -> Path:
    path = cloudtune_home() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
