"""What the user sees: a rich live view on a terminal, plain lines in CI logs,
one JSON document per command with ``--json`` (JSON lines for ``watch``).

Progress goes to stderr, results to stdout, so ``--json`` output stays
machine-readable. Every string passes through :func:`cloudtune.secrets.scrub`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from typing import Any, TextIO

from cloudtune.secrets import scrub


def choose_mode(json_flag: bool, stream: TextIO = sys.stderr) -> str:
    if json_flag:
        return "json"
    if os.environ.get("CLOUDTUNE_PLAIN") or os.environ.get("CI") or not stream.isatty():
        return "plain"
    return "rich"


def output_pipe_closed() -> bool:
    """Whether stdout or stderr is a pipe whose reader has gone (``cloudtune list | head -1``).

    Asked when a BrokenPipeError reaches the top, to tell our own closed output apart from some
    other pipe breaking (a bug to report). A closed one is pointed at devnull, as Python's
    documentation recommends (library/signal.html, "Note on SIGPIPE", read 2026-11-25), so that
    nothing else written, and the interpreter's final flush, raises again.
    """
    closed = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # replaced by a non-file object, or already closed
            continue
        if _reader_gone(fd):
            closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return closed


def _reader_gone(fd: int) -> bool:
    """A pipe's write end polls as an error once its last reader closed (Linux, macOS)."""
    import select

    if not hasattr(select, "poll"):
        return True  # no way to ask (Windows): a BrokenPipeError at the top is most likely ours
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def emit_json(document: dict[str, Any], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(scrub(json.dumps(document, default=str)) + "\n")
    stream.flush()


def say(message: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(scrub(message) + "\n")
    stream.flush()


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Folds jobs and events into the figures the live view shows."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.state = "-"
        self.step: float | None = None
        self.total_steps: float | None = None
        self.epoch: float | None = None
        self.train_loss: float | None = None
        self.valid_loss: float | None = None
        self.events: deque[str] = deque(maxlen=6)
        self.eta_s: float | None = None

    def update_job(self, job: Any) -> None:
        self.state = str(job.state)
        metrics = job.metrics or {}
        self._metrics(metrics)
        if job.is_terminal:
            self.eta_s = None
        elif job.estimated_finish is not None:
            self.eta_s = job.estimated_finish.timestamp() - time.time()

    def update_event(self, event: Any) -> None:
        self._metrics(event.data.get("metrics", event.data) if isinstance(event.data, dict) else {})
        self.events.append(f"{event.created_at:%H:%M:%S} {event.message}")

    def _metrics(self, m: dict[str, Any]) -> None:
        def num(*keys: str) -> float | None:
            for key in keys:
                if isinstance(m.get(key), (int, float)):
                    return float(m[key])
            return None

        self.step = num("step") or self.step
        self.total_steps = num("total_steps") or self.total_steps
        self.epoch = num("epoch") or self.epoch
        self.train_loss = num("train_loss", "loss") if num("train_loss", "loss") is not None else self.train_loss
        self.valid_loss = num("valid_loss", "eval_loss", "val_loss") or self.valid_loss
        if self.step and self.total_steps and self.step < self.total_steps and self.state not in (
            "succeeded", "failed", "cancelled"
        ):
            elapsed = time.monotonic() - self.started
            self.eta_s = elapsed / self.step * (self.total_steps - self.step)

    def line(self) -> str:
        parts = [f"state={self.state}", f"elapsed={format_duration(time.monotonic() - self.started)}"]
        if self.step is not None:
            parts.append(f"step={int(self.step)}/{int(self.total_steps) if self.total_steps else '?'}")
        if self.epoch is not None:
            parts.append(f"epoch={self.epoch:g}")
        if self.train_loss is not None:
            parts.append(f"train_loss={self.train_loss:.4f}")
        if self.valid_loss is not None:
            parts.append(f"valid_loss={self.valid_loss:.4f}")
        if self.eta_s is not None:
            parts.append(f"eta={format_duration(self.eta_s)}")
        return " ".join(parts)


class PlainReporter:
    """Line per step and per event: what CI logs want."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.progress = Progress()
        self._last_state: str | None = None

    def step(self, run: Any, message: str) -> None:
        say(f"[{run.run_id}] {message}", self.stream)

    def job(self, run: Any, job: Any) -> None:
        self.progress.update_job(job)
        if str(job.state) != self._last_state:
            self._last_state = str(job.state)
            say(f"[{run.run_id}] job {job.id}: {self.progress.line()}", self.stream)

    def event(self, run: Any, event: Any) -> None:
        self.progress.update_event(event)
        say(f"[{run.run_id}] {event.created_at:%H:%M:%S} {event.level}: {event.message}", self.stream)

    def deployment(self, run: Any, deployment: Any) -> None:
        say(f"[{run.run_id}] deployment {deployment.name}: {deployment.state}{how_to_call(deployment)}", self.stream)

    def warn(self, message: str) -> None:
        say(f"warning: {message}", self.stream)

    def close(self) -> None:
        pass


class JsonReporter(PlainReporter):
    """``--json``: progress is silent (the result is one document on stdout); ``lines`` turns
    it into JSON lines on stdout, as ``watch --json`` prints."""

    def __init__(self, lines: bool = False) -> None:
        super().__init__(sys.stderr)
        self.lines = lines

    def step(self, run: Any, message: str) -> None:
        if self.lines:
            emit_json({"type": "step", "run_id": run.run_id, "message": message})

    def job(self, run: Any, job: Any) -> None:
        if self.lines:
            emit_json({"type": "job", "run_id": run.run_id, **job.model_dump(mode="json")})

    def event(self, run: Any, event: Any) -> None:
        if self.lines:
            emit_json({"type": "event", "run_id": run.run_id, **event.model_dump(mode="json")})

    def deployment(self, run: Any, deployment: Any) -> None:
        if self.lines:
            emit_json({"type": "deployment", "run_id": run.run_id, **deployment.model_dump(mode="json")})

    def warn(self, message: str) -> None:
        say(f"warning: {message}")


class RichReporter(PlainReporter):
    """A live panel (state, elapsed, step/total, epoch, losses, ETA, latest events)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(self._render(None), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()
        self._run_id = "-"

    def _render(self, run: Any) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        p = self.progress
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("state", p.state)
        table.add_row("elapsed", format_duration(time.monotonic() - p.started))
        if p.step is not None:
            table.add_row("step", f"{int(p.step)}/{int(p.total_steps) if p.total_steps else '?'}")
        if p.epoch is not None:
            table.add_row("epoch", f"{p.epoch:g}")
        if p.train_loss is not None:
            table.add_row("train loss", f"{p.train_loss:.4f}")
        if p.valid_loss is not None:
            table.add_row("valid loss", f"{p.valid_loss:.4f}")
        table.add_row("ETA", format_duration(p.eta_s))
        for line in p.events:
            table.add_row("", scrub(line))
        title = f"cloudtune run {run.run_id}" if run is not None else "cloudtune"
        return Panel(table, title=title)

    def step(self, run: Any, message: str) -> None:
        self.console.print(f"[dim]{run.run_id}[/dim] {scrub(message)}", markup=True, highlight=False)
        self.live.update(self._render(run))

    def job(self, run: Any, job: Any) -> None:
        self.progress.update_job(job)
        self.live.update(self._render(run))

    def event(self, run: Any, event: Any) -> None:
        self.progress.update_event(event)
        self.live.update(self._render(run))

    def deployment(self, run: Any, deployment: Any) -> None:
        self.console.print(f"deployment {deployment.name}: {deployment.state}{how_to_call(deployment)}", markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {scrub(message)}")

    def close(self) -> None:
        self.live.stop()


def how_to_call(deployment: Any) -> str:
    """`` at URL (key: `command`)`` for a ready deployment whose provider says how (the local one)."""
    details = getattr(deployment, "details", None) or {}
    if str(deployment.state) != "ready" or not deployment.endpoint_url or "key_command" not in details:
        return ""
    return f" at {deployment.endpoint_url} (key: `{details['key_command']}`)"


def make_reporter(mode: str, *, lines: bool = False) -> PlainReporter:
    if mode == "plain" and os.environ.get("CLOUDTUNE_PROGRESS") == "jsonl":
        # a child of a multi-provider run whose parent draws the side-by-side board
        # (cloudtune/multirun_view.py): progress as JSON lines, everything else unchanged
        return JsonReporter(lines=True)
    if mode == "json":
        return JsonReporter(lines=lines)
    if mode == "rich":
        return RichReporter()
    return PlainReporter()


def run_document(run: Any, **extra: Any) -> dict[str, Any]:
    """The ``--json`` document every run-level command prints."""
    doc = {
        "run_id": run.run_id,
        "provider": run.provider,
        "status": run.status,
        "step": str(run.step),
        "job_id": run.job_id,
        "state": str(run.job_state) if run.job_state else None,
        "fine_tuned_model": run.fine_tuned_model,
        "deployment": run.deployment_names[-1] if run.deployment_names else None,
        "deployments": list(run.deployment_names),
        "endpoint_url": (run.endpoints().get(run.live_deployment() or "") or {}).get("endpoint_url"),
        "endpoints": run.endpoints(),
        "training_file_id": run.training_file_id,
        "validation_file_id": run.validation_file_id,
        "smoke_test": run.smoke_test,
        "evaluation": run.evaluation,
        "deleted": list(run.deleted_resources),
        "resources": [r.model_dump(mode="json") for r in run.resources],
        "cleanups": [c.model_dump(mode="json") for c in run.cleanups],
        "error": run.error.to_dict() if run.error is not None else None,
    }
    doc.update(extra)
    return doc
