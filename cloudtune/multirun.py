"""One spec on several providers: ``cloudtune run CONFIG --provider local,azure,openai`` (or
``providers: [...]`` in the YAML), and ``cloudtune run --like RUN --provider P [--model M]``.

Each provider gets its own ``cloudtune run`` child process, so each run keeps its own id,
lock and ledger record exactly as if started alone, and a crash of one cannot touch the
others. At most ``--max-parallel`` children run at once. On a terminal their progress is one
live table, a row per provider (``multirun_view``); in CI logs their lines are printed
prefixed with the provider. A provider that refuses the spec (a model it
does not offer, a retired base) is reported and the others go on. When the spec has an
eval file, the runs that succeeded are compared at the end (``cloudtune compare``).

Exit code: 0 when every requested run succeeded, otherwise the first failing child's code
in the order the providers were given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.output import choose_mode, emit_json, say

MAX_PARALLEL = 4
_RUN_LINE = re.compile(r"^run (\S+): ")
# flags of `cloudtune run` that this module consumes; the rest are passed to every child
_OWN_FLAGS = {"provider", "like", "json", "config", "max_parallel", "report", "baseline", "handler", "command",
              "preflight_only",
              "run_id"}


def requested_providers(args: argparse.Namespace) -> list[str]:
    """The providers asked for: ``--provider a,b`` or the YAML's ``providers:`` list."""
    from cloudtune.config import read_yaml

    if args.provider:
        return [p.strip() for p in args.provider.split(",") if p.strip()]
    if getattr(args, "config", None):
        listed = read_yaml(Path(args.config)).get("providers")
        if listed is not None:
            if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
                raise errors.ConfigError(f"providers in {args.config} must be a list of provider names, not {listed!r}.")
            return listed
    return []


def wanted(args: argparse.Namespace) -> bool:
    """Several providers (a comma in --provider, or a YAML providers: list without --provider), or --like."""
    if getattr(args, "like", None):
        return True
    return "," in (args.provider or "") or (not args.provider and bool(requested_providers(args)))


def like_config(run_id: str, provider: str, model: str | None) -> Path:
    """A YAML config repeating a recorded run's spec (data, hyperparameters, eval file) for
    ``provider``; provider-specific settings (options, deployment name) are left out."""
    import yaml

    from cloudtune.catalog import lookup_model
    from cloudtune.ledger import cloudtune_home
    from cloudtune.state import open_state

    run = open_state().get_run(run_id)
    spec = run.spec.model_dump(mode="json", exclude={"provider", "provider_options"})
    spec["deploy"].pop("name", None)
    if model:
        spec["base_model"] = model
    elif provider != run.provider and lookup_model(provider, run.spec.base_model) is None:
        raise errors.ConfigError(
            f"{run.spec.base_model} (the base model of run {run.run_id}) is not a {provider} model.",
            hint=f"cloudtune run --like {run.run_id} --provider {provider} --model MODEL")
    folder = cloudtune_home() / "like"
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"like-{run.run_id}-", suffix=".yaml", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        yaml.safe_dump({k: v for k, v in spec.items() if v is not None}, out, sort_keys=False)
    return Path(name)


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The child's flags: every `cloudtune run` flag the user set, except ours."""
    from cloudtune.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: list[str] = []
    for action in sub.choices["run"]._actions:
        if not action.option_strings or action.dest in _OWN_FLAGS:
            continue
        value = getattr(args, action.dest, None)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if value is not None and value == action.const and value != action.default:
                out.append(action.option_strings[-1] if len(action.option_strings) > 1 else action.option_strings[0])
        elif isinstance(action, argparse._AppendAction):
            for item in value or []:
                out += [action.option_strings[0], str(item)]
        elif value is not None and value != action.default:
            out += [action.option_strings[-1], str(value)]
    return out


@dataclass
class Child:
    provider: str
    argv: list[str]
    code: int | None = None
    run_id: str | None = None
    last_lines: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.code not in (0, None) and self.run_id is None


def _drive_child(child: Child, lock: threading.Lock, quiet: bool, board: Any = None) -> Child:
    """Run one child to its end. Its lines go to the live board (a terminal), or are printed
    prefixed with its provider (CI logs), or nowhere (``--json``: the result says it all)."""
    from cloudtune.multirun_view import PROGRESS_ENV

    env = {**os.environ, "CLOUDTUNE_PLAIN": "1"}
    env.pop(PROGRESS_ENV, None)
    if board is not None:
        env[PROGRESS_ENV] = "jsonl"
    process = subprocess.Popen(child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               bufsize=1)
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        match = _RUN_LINE.match(line)
        if match and child.run_id is None:
            child.run_id = match.group(1)
        child.last_lines = [*child.last_lines[-19:], line]
        if board is not None:
            board.line(child.provider, line)
        elif not quiet:
            with lock:
                say(f"[{child.provider:<7}] {line}")
    child.code = process.wait()
    if board is not None:
        child.run_id = child.run_id or board.run_id(child.provider)
        board.finished(child.provider, child.code)
    return child


def run_many(args: argparse.Namespace) -> int:
    from cloudtune import registry
    from cloudtune.state import open_state

    config = args.config
    if getattr(args, "like", None):
        providers = requested_providers(argparse.Namespace(provider=args.provider, config=None))
        if not providers:
            raise errors.ConfigError("--like RUN needs --provider P (one or several, comma-separated).")
        config = str(like_config(args.like, providers[0], args.model))
    else:
        providers = requested_providers(args)
    unknown = [p for p in providers if p not in registry.known_providers()]
    if unknown:
        raise errors.ConfigError(f"Unknown provider(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(registry.known_providers()))}.")
    base = [sys.executable, "-m", "cloudtune", "run", *([config] if config else []), *_passthrough(args)]
    children = [Child(p, [*base, "--provider", p]) for p in providers]
    refused = _preflight(children)  # every provider is asked before any of them uploads anything
    startable = [c for c in children if c not in refused]
    if not args.json:
        for child in refused:
            say(f"[{child.provider:<7}] cannot start, not run: {child.last_lines[-1] if child.last_lines else child.code}")
        say(f"Starting {len(startable)} runs ({', '.join(c.provider for c in startable)}), at most "
            f"{args.max_parallel or MAX_PARALLEL} at a time")
    lock = threading.Lock()
    board = None
    if choose_mode(args.json) == "rich":  # a terminal: the runs side by side in one live table
        from cloudtune.multirun_view import Board, LiveBoard

        board = LiveBoard(Board(providers))
    with contextlib.ExitStack() as stack:
        if board is not None:
            stack.enter_context(board)
        for child in refused if board is not None else ():
            board.line(child.provider, child.last_lines[-1] if child.last_lines else "cannot start")
            board.finished(child.provider, child.code)
        with ThreadPoolExecutor(max_workers=max(1, args.max_parallel or MAX_PARALLEL)) as pool:
            list(pool.map(lambda c: _drive_child(c, lock, args.json, board), startable))
    return _finish(args, children, open_state())


def _preflight(children: list[Child]) -> list[Child]:
    """Ask every child's provider, at once, whether it can start the spec (``run --preflight-only``:
    SDK, credentials, the provider's refusals of the model or method, the local base model found):
    a provider that cannot start is found before any provider uploads or trains. Returns those,
    with their exit code and message; they are reported as refused and not run."""
    env = {**os.environ, "CLOUDTUNE_PLAIN": "1"}

    def ask(child: Child) -> Child | None:
        done = subprocess.run([*child.argv, "--preflight-only"], capture_output=True, text=True, env=env)
        if done.returncode == 0:
            return None
        child.code = done.returncode
        child.last_lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-20:]
        return child

    with ThreadPoolExecutor(max_workers=max(1, len(children))) as pool:
        return [child for child in pool.map(ask, children) if child is not None]


def _finish(args: argparse.Namespace, children: list[Child], ledger: Any) -> int:
    results: list[dict[str, Any]] = []
    for child in children:
        run = ledger.get_run(child.run_id) if child.run_id else None
        entry: dict[str, Any] = {"provider": child.provider, "exit_code": child.code,
                                 "run_id": child.run_id, "status": run.status if run else "refused"}
        if run is not None and run.error:
            entry["error"] = run.error.message
        elif child.code:
            entry["error"] = next((line for line in child.last_lines if line.startswith("cloudtune:")),
                                  child.last_lines[-1] if child.last_lines else "no output")
        results.append(entry)
        if not args.json:
            detail = f"run {entry['run_id']}: {entry['status']}" if entry["run_id"] else "refused"
            say(f"{entry['provider']:<8} {detail}" + (f" - {entry['error']}" if entry.get("error") else ""),
                sys.stdout)
    code = next((c.code for c in children if c.code), 0) or 0
    succeeded = [c for c in children if c.code == 0 and c.run_id]
    comparison_doc = None
    eval_file = _eval_file(ledger, succeeded)
    if eval_file and succeeded:
        comparison_doc = _compare(args, [c.run_id for c in succeeded if c.run_id], eval_file)
    if args.json:
        emit_json({"runs": results, "comparison": comparison_doc, "exit_code": code})
    elif code:
        say(f"not every run succeeded (exit {code})", sys.stdout)
    return code


def _eval_file(ledger: Any, succeeded: list[Child]) -> str | None:
    for child in succeeded:
        run = ledger.get_run(child.run_id)
        if run.spec.eval_file:
            return str(run.spec.eval_file)
    return None


def _compare(args: argparse.Namespace, run_ids: list[str], eval_file: str) -> dict[str, Any] | None:
    """The comparison of the runs that succeeded; a run without a deployment is left out."""
    from cloudtune.compare.command import build_comparison
    from cloudtune.compare.report import render_terminal
    from cloudtune.compare.runfacts import live_deployment
    from cloudtune.state import open_state

    ledger = open_state()
    deployed = [r for r in run_ids if live_deployment(ledger.get_run(r))]
    if not deployed:
        return None
    compare_args = argparse.Namespace(run_ids=deployed, eval=eval_file, baseline=args.baseline, few_shot=0,
                                      judge=None, report=args.report, concurrency=None, limit=None, json=args.json)
    comparison = build_comparison(compare_args)
    written: dict[str, str] = {}
    if args.report:
        from cloudtune.compare.report_files import write_report

        written = {k: str(v) for k, v in write_report(comparison, Path(args.report)).items()}
    if not args.json:
        render_terminal(comparison, sys.stdout)
        if written:
            say(f"report: {written['report.html']}", sys.stdout)
    return {**comparison.to_dict(examples=False), "report_files": written}
