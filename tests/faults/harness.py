"""One scenario's world: its CLOUDTUNE_HOMEs, its CLI subprocesses, and the checks every
scenario ends with, all judged from the emulator's own records.

The checks after a scenario (``finish``):

1. exactly the expected number of jobs carries each run's tag (one, unless the run never got
   that far), and the scenario made no job without a run tag;
2. after each run's cleanup nothing the scenario created is left (files, models, deployments,
   endpoints, data assets);
3. nothing that existed before the scenario was deleted or repointed (a bystander run and
   another team's deployment are planted once per target for this);
4. the ledger (``cloudtune status RUN --json --offline``) agrees with the emulator: its job is
   one of the run's jobs, what it says it owns exists, what it says it deleted is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cli_zygote import Process, run_cloudtune, start_cloudtune
from tests.support.testenv import env_without
from tests.faults import records
from tests.faults.targets import ROOT, Target, write_training

CLI = [sys.executable, "-m", "cloudtune"]  # what a started command's ``args`` begin with
ACTIVE_JOB_STATUSES = {"validating_files", "queued", "running", "paused", "pending", "notRunning", "Running",
                       "Starting", "Preparing", "Queued", "NotStarted", "Provisioning", "starting"}
CHECKED_KINDS = ("file", "model", "deployment", "endpoint", "data_asset")
TIME_SCALE = 0.05  # CLOUDTUNE_TIME_SCALE of every CLI a scenario starts


class ScenarioFailed(AssertionError):
    """A behaviour the issue demands did not hold; the message is the one-line reason."""


def expect(condition: object, reason: str) -> None:
    if not condition:
        raise ScenarioFailed(reason)


@dataclass
class Result:
    args: tuple[str, ...]
    rc: int
    out: str
    err: str

    @property
    def doc(self) -> dict[str, Any]:
        """The last JSON document the command printed ({} if none)."""
        for line in reversed(self.out.splitlines()):
            if line.strip().startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        try:
            return json.loads(self.out)
        except json.JSONDecodeError:
            return {}

    @property
    def text(self) -> str:
        return self.out + self.err

    def brief(self) -> str:
        """The command, its exit code and the most telling line of what it said."""
        error = self.doc.get("error")
        if isinstance(error, dict) and error.get("message"):
            tail = str(error["message"])
        else:
            lines = [line.strip() for line in (self.err + "\n" + self.out).splitlines() if line.strip()]
            telling = [line for line in lines if not line.startswith(("run id:", "{", "hint:"))]
            tail = (telling or lines or [""])[-1]
        return f"`{' '.join(self.args[:2])}` exit {self.rc}: {tail[:240]}"


@dataclass
class TrackedRun:
    run_id: str
    home: Path
    jobs: int = 1  # how many jobs the service must hold with this run's tag at the end
    cleanup: bool = True  # the harness cleans it up at the end (then nothing of it may be left)


@dataclass
class Ctx:
    target: Target
    tmp: Path
    runs: list[TrackedRun] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    homes: dict[str, Path] = field(default_factory=dict)
    extra_homes: list[Path] = field(default_factory=list)  # e.g. the bystander's, for records
    baseline: records.Snapshot = field(default_factory=records.empty)  # the service before the scenario
    hits_mark: int = 0  # fault hits of earlier scenarios (the emulator's list only grows)
    # a shared state (CLOUDTUNE_STATE and what reaches it) every home of the scenario uses, checks included
    shared_state: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = write_training(self.tmp / "train.jsonl")

    # ------------------------------------------------------------- processes
    def home(self, label: str = "a") -> Path:
        if label not in self.homes:
            self.homes[label] = self.tmp / f"home-{label}"
        return self.homes[label]

    def env(self, home: str = "a", **extra: str) -> dict[str, str]:
        env = env_without("CLOUDTUNE_", "OPENAI_", "AZURE_")
        env.update(self.target.env)
        # every wait of the CLI on the time scale: back-offs of 2/4/8 s take 0.1/0.2/0.4 s, and the
        # polls (2 s, at most 6 s, on that scale) come every 0.1-0.3 s
        env.update(CLOUDTUNE_HOME=str(self.home(home)), CLOUDTUNE_TIME_SCALE=str(TIME_SCALE),
                   CLOUDTUNE_POLL_INTERVAL="2", CLOUDTUNE_POLL_MAX="6",
                   PYTHONPATH=str(ROOT), CI="1", PYTHONUNBUFFERED="1")
        env.pop("AZURE_OPENAI_API_KEY", None)  # Entra ID through the emulator's token endpoint
        env.update(self.shared_state)
        env.update(extra)
        return env

    def cli(self, *args: str, home: str = "a", timeout: float = 180, **env: str) -> Result:
        """``cloudtune *args`` to its end, in a process forked from the CLI zygote (the SDKs
        already imported; ``CLOUDTUNE_TESTS_FRESH_CLI=1``: a fresh interpreter each time)."""
        began = time.monotonic()
        try:
            done = run_cloudtune(list(args), self.tmp, self.env(home, **env), timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            raise ScenarioFailed(f"`{' '.join(args[:2])}` did not finish in {timeout:.0f}s") from exc
        if os.environ.get("CLOUDTUNE_FAULTS_TRACE"):  # where a slow row spends its time
            print(f"    {time.monotonic() - began:5.1f}s {self.target.name} {' '.join(args[:3])} -> {rc}",
                  file=sys.stderr, flush=True)
        return Result(args, rc, out, err)

    def start(self, *args: str, home: str = "a", **env: str) -> Process:
        """``cloudtune *args`` started in a session of its own (forked from the CLI zygote; behaves as
        ``subprocess.Popen``: the test signals it, kills it, reads its exit status and output)."""
        process = start_cloudtune(list(args), self.tmp, self.env(home, **env))
        self.processes.append(process)
        return process

    def finish_process(self, process: Process, timeout: float = 120) -> Result:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            out, err = process.communicate()
            said = [line.strip() for line in (err + out).splitlines() if line.strip()][-2:]
            if os.environ.get("CLOUDTUNE_FAULTS_TRACE"):
                print(err[-4000:], file=sys.stderr, flush=True)
            raise ScenarioFailed(f"`{' '.join(map(str, process.args[len(CLI):len(CLI) + 2]))}` did not end in "
                                 f"{timeout:.0f}s; its last words: {' | '.join(said)[-300:]}") from exc
        return Result(tuple(map(str, process.args[len(CLI):])), process.returncode, out, err)

    def signal(self, process: Process, sig: int) -> Result:
        process.send_signal(sig)
        return self.finish_process(process)

    # ------------------------------------------------------------- runs
    def run_args(self, *extra: str, data: Path | None = None, validation_split: bool = True) -> list[str]:
        return [*self.target.run_args(data or self.data, validation_split), *extra]

    def run(self, *extra: str, home: str = "a", jobs: int = 1, data: Path | None = None, **env: str) -> Result:
        """``cloudtune run`` for this target; the run is tracked for the final checks."""
        result = self.cli(*self.run_args(*extra, data=data), home=home, **env)
        run_id = result.doc.get("run_id") or self.latest_run_id(home)
        expect(run_id, f"run printed no run id: {result.brief()}")
        self.track(run_id, home, jobs=jobs)
        return result

    def start_run(self, *extra: str, home: str = "a", **env: str) -> Process:
        return self.start(*self.run_args(*extra), home=home, **env)

    def track(self, run_id: str, home: str = "a", jobs: int = 1, cleanup: bool = True) -> TrackedRun:
        for tracked in self.runs:
            if tracked.run_id == run_id:
                tracked.jobs, tracked.cleanup = jobs, cleanup
                return tracked
        tracked = TrackedRun(run_id, self.home(home), jobs, cleanup)
        self.runs.append(tracked)
        return tracked

    def latest_run_id(self, home: str = "a", wait_s: float = 60) -> str | None:
        """The newest run in a home's ledger (waits for a starting process to record it)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if any(self.home(home).glob("ledger*")):
                listed = self.cli("list", "--json", home=home)
                runs = listed.doc.get("runs") or []
                if runs:
                    return runs[0]["run_id"]
            time.sleep(0.2)
        return None

    def status(self, run_id: str, home: str = "a") -> dict[str, Any]:
        result = self.cli("status", run_id, "--json", "--offline", home=home)
        expect(result.rc == 0 and result.doc, f"status --offline failed: {result.brief()}")
        return result.doc

    # ------------------------------------------------------------- emulator
    def snapshot(self) -> records.Snapshot:
        return self.target.snapshot([*self.homes.values(), *self.extra_homes])

    def jobs_of(self, run_id: str, snap: records.Snapshot | None = None) -> dict[str, dict[str, Any]]:
        snap = snap or self.snapshot()
        return {key: info for key, info in snap["job"].items() if info.get("run") == run_id}

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 60,
                 process: Process | None = None) -> Any:
        """Poll until ``predicate()`` is truthy (a state, never a duration, decides)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if process is not None and process.poll() is not None:
                result = self.finish_process(process)
                raise ScenarioFailed(f"process ended before {what}: {result.brief()}")
            time.sleep(0.05)
        raise ScenarioFailed(f"timed out waiting for {what}")

    def hits(self) -> list[str]:
        """Fault hits of this scenario ("kind:METHOD /path")."""
        return self.target.hits()[self.hits_mark:]

    def wait_hit(self, fragment: str, process: Process | None = None, count: int = 1) -> None:
        """Wait until an armed fault has hit a request whose line contains ``fragment``."""
        self.wait_for(f"a request matching {fragment!r}",
                      lambda: sum(fragment in hit for hit in self.hits()) >= count, process=process)

    def wait_new_job(self, before: records.Snapshot, process: Process | None = None,
                     status: str | None = None) -> str:
        def found() -> str | None:
            for key, info in self.snapshot()["job"].items():
                if key not in before["job"] and (status is None or info.get("status") == status):
                    return key
            return None

        return self.wait_for("a new job" + (f" in status {status}" if status else ""), found, process=process)

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: the CLI and nothing else
                except ProcessLookupError:
                    pass
                process.communicate()


# ----------------------------------------------------------------- ledger view


def ledger_claims(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, id, state) of every resource a run record names. Reads the typed registry
    (``resources``) when the record has one, else the older fields."""
    run = doc.get("run") if isinstance(doc.get("run"), dict) else doc
    claims: list[tuple[str, str, str]] = []
    if isinstance(run.get("resources"), list):
        for item in run["resources"]:
            claims.append((str(item.get("kind")), str(item.get("id")), str(item.get("state"))))
        return claims
    deleted = set(run.get("deleted") or [])
    for key, kind in (("training_file_id", "file"), ("validation_file_id", "file"), ("fine_tuned_model", "model")):
        value = run.get(key)
        if value:
            claims.append((kind, value, "deleted" if f"{kind}:{value}" in deleted else "owned"))
    for name in run.get("deployments") or []:
        claims.append(("deployment", name, "deleted" if f"deployment:{name}" in deleted else "owned"))
    return claims


def run_job_id(doc: dict[str, Any]) -> str | None:
    run = doc.get("run") if isinstance(doc.get("run"), dict) else doc
    return run.get("job_id")


def _emulator_kind(kind: str, target: Target) -> str | None:
    if kind in ("file", "model", "deployment", "endpoint", "data_asset"):
        if kind == "file" and target.name == "azure-serverless":
            return "data_asset"  # the serverless route uploads data assets where others upload files
        if kind == "deployment" and target.name == "azure-serverless":
            return "endpoint"
        return kind
    return None


def check_ledger(ctx: Ctx, tracked: TrackedRun, snap: records.Snapshot, *, foreign_present: bool = True) -> None:
    """The run's ledger record and the emulator agree (read-only ``status --offline``). A foreign
    resource's owner may delete it, so after the owners' cleanups it is not looked for."""
    home_label = next(label for label, path in ctx.homes.items() if path == tracked.home)
    doc = ctx.status(tracked.run_id, home_label)
    job_id = run_job_id(doc)
    run_jobs = ctx.jobs_of(tracked.run_id, snap)
    if job_id:
        expect(any(records.same_resource(job_id, key) for key in snap["job"]),
               f"ledger job {job_id} is not on the service")
        if run_jobs:
            expect(any(records.same_resource(job_id, key) for key in run_jobs),
                   f"ledger job {job_id} is not the job tagged with run {tracked.run_id}")
    for kind, ident, state in ledger_claims(doc):
        emulator_kind = _emulator_kind(kind, ctx.target)
        if emulator_kind is None or (ctx.target.service == "openai" and kind == "deployment"):
            continue  # OpenAI deployments are names the provider keeps per home (checked as leftovers)
        there = any(records.same_resource(ident, key) for key in records.present(snap, emulator_kind))
        if state == "owned" or (state == "foreign" and foreign_present):
            expect(there, f"ledger says {kind} {ident} is {state}, the service does not have it")
        elif state == "deleted":
            expect(not there, f"ledger says {kind} {ident} was deleted, the service still has it")


# ----------------------------------------------------------------- final checks


def final_cleanup(ctx: Ctx) -> None:
    snap = ctx.snapshot()
    for tracked in ctx.runs:
        if not tracked.cleanup:
            continue
        label = next(label for label, path in ctx.homes.items() if path == tracked.home)
        active = any(info.get("status") in ACTIVE_JOB_STATUSES for info in ctx.jobs_of(tracked.run_id, snap).values())
        args = ["cleanup", tracked.run_id, "--json"] + (["--cancel"] if active else [])
        result = ctx.cli(*args, home=label)
        expect(result.rc == 0, f"final {' '.join(args[:1] + args[2:])} failed: {result.brief()}")


def check_invariants(ctx: Ctx, before: records.Snapshot) -> None:
    after = ctx.snapshot()
    for tracked in ctx.runs:
        count = len(ctx.jobs_of(tracked.run_id, after))
        expect(count == tracked.jobs, f"run {tracked.run_id}: {count} jobs carry its tag, expected {tracked.jobs}")
    untagged = [key for key, info in after["job"].items() if key not in before["job"] and not info.get("run")]
    expect(not untagged, f"job(s) without a run tag: {untagged}")
    for kind in CHECKED_KINDS:
        gone = sorted(set(records.present(before, kind)) - set(after[kind]))
        expect(not gone, f"deleted a {kind} the scenario did not create: {gone}")
        repointed = [key for key, info in records.present(before, kind).items()
                     if key in after[kind] and info.get("model") != after[kind][key].get("model")]
        expect(not repointed, f"repointed a {kind} the scenario did not create: {repointed}")
    cleaned = {t.run_id for t in ctx.runs if t.cleanup}
    for kind in CHECKED_KINDS:
        left = sorted(key for key, info in records.present(after, kind).items()
                      if key not in before[kind] and (info.get("run") in cleaned or not info.get("run")))
        expect(not left, f"left after cleanup: {kind} {left}")
    for tracked in ctx.runs:
        check_ledger(ctx, tracked, after, foreign_present=False)


def check_ledgers_before_cleanup(ctx: Ctx) -> None:
    """At the end of the scenario proper, before the harness cleans up, each ledger agrees too."""
    snap = ctx.snapshot()
    for tracked in ctx.runs:
        check_ledger(ctx, tracked, snap)
