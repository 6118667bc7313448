"""The live view of several runs at once: one row per provider, side by side.

Each child ``cloudtune run`` is started with ``CLOUDTUNE_PROGRESS=jsonl``, so its progress
arrives as the same JSON lines ``watch --json`` prints (steps, job snapshots, events), and any
other line (an error, the final summary) as text. The board folds each child's lines into a
``Progress`` (the figures the one-run live panel shows) and renders them as a table that rich
redraws in place on a terminal. Step messages and errors are also printed above the table,
prefixed with the provider, so the scrollback keeps the story once the table is gone.

Off a terminal (CI logs, ``CLOUDTUNE_PLAIN``) the parent prints the children's plain lines
prefixed with the provider instead; see ``multirun._drive_child``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloudtune.output import Progress, format_duration
from cloudtune.secrets import scrub

PROGRESS_ENV = "CLOUDTUNE_PROGRESS"  # set to "jsonl" in the children the board reads


@dataclass
class ChildView:
    provider: str
    run_id: str | None = None
    progress: Progress = field(default_factory=Progress)
    latest: str = "starting"
    exit_code: int | None = None
    ended: float | None = None  # monotonic time the child exited: elapsed stops there

    @property
    def outcome(self) -> str:
        if self.exit_code is None:
            return self.progress.state if self.progress.state != "-" else "starting"
        if self.exit_code == 0:
            return "succeeded"
        return "refused" if self.run_id is None else f"failed (exit {self.exit_code})"


class Board:
    """What the live table shows; fed line by line from the children's output (thread-safe)."""

    def __init__(self, providers: list[str]) -> None:
        self.views = {provider: ChildView(provider) for provider in providers}
        self._lock = threading.Lock()

    def feed(self, provider: str, line: str) -> str | None:
        """Fold one output line of ``provider``'s child in; returns a line worth keeping in the
        scrollback (a step message, an error, a warning), or None for progress only."""
        view = self.views[provider]
        document = _json_line(line)
        with self._lock:
            if document is None:
                if line.strip():
                    view.latest = line.strip()
                return line if line.startswith(("cloudtune:", "warning:", "error")) else None
            view.run_id = view.run_id or document.get("run_id")
            kind = document.get("type")
            if kind == "job":
                view.progress.update_job(_Snapshot(document, terminal=document.get("state") in _TERMINAL))
                return None
            if kind == "event":
                view.progress.update_event(_Event(document))
                view.latest = str(document.get("message") or view.latest)
                return None
            message = str(document.get("message") or document.get("state") or kind)
            view.latest = message if kind == "step" else f"deployment {document.get('name')}: {document.get('state')}"
            return view.latest

    def finish(self, provider: str, exit_code: int) -> None:
        with self._lock:
            self.views[provider].exit_code = exit_code
            self.views[provider].ended = time.monotonic()

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title="cloudtune runs", expand=False)
        for column in ("provider", "run", "state", "step", "epoch", "train loss", "valid loss", "elapsed", "ETA", "latest"):
            table.add_column(column, no_wrap=column != "latest", overflow="fold" if column == "latest" else "ellipsis")
        with self._lock:
            for view in self.views.values():
                p = view.progress
                table.add_row(
                    view.provider,
                    view.run_id or "-",
                    view.outcome,
                    f"{int(p.step)}/{int(p.total_steps) if p.total_steps else '?'}" if p.step is not None else "-",
                    f"{p.epoch:g}" if p.epoch is not None else "-",
                    f"{p.train_loss:.4f}" if p.train_loss is not None else "-",
                    f"{p.valid_loss:.4f}" if p.valid_loss is not None else "-",
                    format_duration((view.ended or time.monotonic()) - p.started),
                    format_duration(p.eta_s) if view.exit_code is None else "-",
                    scrub(view.latest)[:120],
                )
        return table


class LiveBoard:
    """The board redrawn in place on stderr while the children run; the last table stays."""

    def __init__(self, board: Board) -> None:
        from rich.console import Console
        from rich.live import Live

        self.board = board
        self.console = Console(stderr=True)
        self.live = Live(board.table(), console=self.console, refresh_per_second=4, transient=False)
        self._lock = threading.Lock()

    def __enter__(self) -> LiveBoard:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.board.table(), refresh=True)
        self.live.stop()

    def line(self, provider: str, line: str) -> None:
        kept = self.board.feed(provider, line)
        with self._lock:
            if kept:
                self.console.print(f"[bold]{provider}[/bold] {scrub(kept)}", highlight=False, markup=False)
            self.live.update(self.board.table())

    def run_id(self, provider: str) -> str | None:
        """The run id ``provider``'s child reported in its progress, if it got that far."""
        return self.board.views[provider].run_id

    def finished(self, provider: str, exit_code: int) -> None:
        self.board.finish(provider, exit_code)
        with self._lock:
            self.live.update(self.board.table())


_TERMINAL = {"succeeded", "failed", "cancelled"}


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "type" in document else None


class _Snapshot:
    """A job line as ``Progress.update_job`` reads a ``Job``."""

    def __init__(self, document: dict[str, Any], *, terminal: bool) -> None:
        self.state = document.get("state") or "-"
        self.metrics = document.get("metrics") or {}
        self.is_terminal = terminal
        self.estimated_finish = _parse_time(document.get("estimated_finish"))


class _Event:
    def __init__(self, document: dict[str, Any]) -> None:
        self.message = str(document.get("message") or "")
        self.data = document.get("data") or {}
        self.created_at = _parse_time(document.get("created_at")) or _now()


def _parse_time(value: Any) -> Any:
    from datetime import datetime

    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
