"""``cloudtune state show``, ``cloudtune state migrate --to URL`` and ``cloudtune unlock RUN``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cloudtune import errors
from cloudtune.output import emit_json, say
from cloudtune.state import StateStore, connect_state, describe_unreadable, open_state, redacted_url


def show(args: argparse.Namespace) -> int:
    store = open_state()
    doc: dict[str, Any] = {**store.describe(), "runs": len(store.run_ids())}
    if args.json:
        emit_json(doc)
        return 0
    say(f"backend:        {doc['backend']}", sys.stdout)
    say(f"location:       {doc['location']}", sys.stdout)
    say(f"schema version: {doc['schema_version']} (this cloudtune: {doc['supported_schema_version']})", sys.stdout)
    say(f"runs:           {doc['runs']}", sys.stdout)
    if not doc["locks"]:
        say("locks:          none held", sys.stdout)
    for lock in doc["locks"]:
        say(f"lock:           run {lock['run_id']} held by {lock['held']}", sys.stdout)
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Copy every run (record and journal) to another state, each under its lock, then verify."""
    source = open_state()
    target = connect_state(args.to)
    try:
        if target.location == source.location:
            raise errors.InvalidInput(f"The state is already at {source.location}; nothing to migrate.")
        copied, same, problems = _copy_all(source, target)
    finally:
        target.close()
    problems += describe_unreadable(source.unreadable)
    destination = redacted_url(args.to)
    if args.json:
        emit_json({"from": source.location, "to": destination, "copied": copied, "already_there": same,
                   "problems": problems, "verified": not problems})
    else:
        say(f"copied {len(copied)} run(s) from {source.location} to {destination}"
            + (f"; {len(same)} were already there, identical" if same else "") + "; every copy verified", sys.stdout)
        for problem in problems:
            say(f"not migrated: {problem}")
        if not problems:
            say(f"From now on: export CLOUDTUNE_STATE='{destination}' (on every machine that drives these runs)",
                sys.stdout)
    return errors.EXIT_INVALID_INPUT if problems else 0


def _copy_all(source: StateStore, target: StateStore) -> tuple[list[str], list[str], list[str]]:
    copied: list[str] = []
    same: list[str] = []
    problems: list[str] = []
    for run_id in reversed(source.run_ids()):  # oldest first: the copy lists in the same order
        try:
            with source.lock(run_id):  # nobody drives it while it moves
                run = source.load_run(run_id)
                steps = source.history(run_id)
                existing = target.load_run(run_id)
                if existing is not None:
                    if _same(existing, run) and _journal(target.history(run_id)) == _journal(steps):
                        same.append(run_id)
                    else:
                        problems.append(f"run {run_id} already exists in the target with other contents")
                    continue
                target.import_run(run, steps)
                if not (_same(target.load_run(run_id), run) and _journal(target.history(run_id)) == _journal(steps)):
                    problems.append(f"run {run_id}: the copy differs from the original")
                    continue
                copied.append(run_id)
        except errors.RunLocked as exc:
            problems.append(f"run {run_id}: {exc}")
        except errors.InvalidInput as exc:
            if source.unreadable and source.unreadable[-1].run_id == run_id:
                continue  # reported once, with the other unreadable records
            problems.append(f"run {run_id}: {exc}")
    return copied, same, problems


def _same(a: Any, b: Any) -> bool:
    return a is not None and a.model_dump(mode="json") == b.model_dump(mode="json")


def _journal(steps: list[Any]) -> list[tuple[Any, ...]]:
    """The journal with ids replaced by positions: a copy renumbers, and must keep every link."""
    position = {s.id: n for n, s in enumerate(steps)}
    return [(s.action, s.phase, position.get(s.intent_id) if s.intent_id is not None else None, round(s.at, 3),
             s.data) for s in steps]


def unlock(args: argparse.Namespace) -> int:
    """Break a run's lock whose holder cannot release it (a runner gone with its lease still live)."""
    store = open_state()
    run = store.get_run(args.run_id)
    holder = store.lock_holder(run.run_id)
    if holder is None:
        message = f"run {run.run_id} is not locked; nothing to do"
        if args.json:
            emit_json({"run_id": run.run_id, "holder": None, "message": message})
        else:
            say(message, sys.stdout)
        return 0
    if not args.json:
        say(f"run {run.run_id} is locked by {holder.describe()}", sys.stdout)
    broken = store.break_lock(run.run_id)  # the SQLite/flock backend refuses: the kernel frees it on exit
    message = f"lock of run {run.run_id} broken (it was held by {(broken or holder).describe()})"
    if args.json:
        emit_json({"run_id": run.run_id, "holder": (broken or holder).describe(), "message": message})
    else:
        say(message, sys.stdout)
    return 0
