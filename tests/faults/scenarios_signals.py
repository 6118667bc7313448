"""Issue 9: kill -9 and SIGTERM at every pipeline step, each followed by ``resume``; and the
local worker dying. The run is stopped while the emulator holds the step's call (a fault keeps
the request or its answer back, or the job/deployment is pinned in progress), so the moment is
chosen by state, never by a delay. After the resume: one job, one upload per file, success."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

from tests.faults.harness import Ctx, expect
from tests.faults.matrix import scenario
from tests.faults.scenarios_transport import CHAT, CREATE, DELETE, UPLOAD, one_upload_per_file, route

HOLD_S = 60.0  # how long a held call waits; the scenario signals long before


def _new(ctx: Ctx, kind: str) -> list[str]:
    return [key for key in ctx.snapshot()[kind] if key not in ctx.baseline[kind]]


def hold_upload(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    ctx.wait_for("the upload to be stored (its answer held back)", lambda: _new(ctx, "file"), process=process)
    return lambda: None


def hold_file_processing(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    # the upload was stored and answered; the run's look at the file (is it processing / in
    # error?) is held, so the signal lands after the upload and before the job exists
    ctx.wait_hit("latency:GET /v1/files/", process)
    return lambda: None


def hold_create(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    ctx.wait_new_job(ctx.baseline, process)
    return lambda: None


def hold_wait(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    ctx.wait_new_job(ctx.baseline, process)  # training is held (armed before the run)
    return ctx.target.release_jobs


def hold_deploy(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    kind = "endpoint" if ctx.target.name == "azure-serverless" else "deployment"
    new = ctx.wait_for(f"the {kind} to be created (still provisioning)", lambda: _new(ctx, kind), process=process)

    def ready() -> None:
        ctx.target.set_timings(deploy_s=0.0)
        with ctx.target.app.lock:
            for key in new:
                dep = ctx.target.app.store.cs_deployments.get(tuple(key.split("/", 1)))
                if dep is not None:
                    dep["ready_after"] = 0.0
    return ready


def hold_smoke(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    ctx.wait_hit("latency:POST", process)
    return lambda: None


def hold_cleanup(ctx: Ctx, process: subprocess.Popen[str]) -> Callable[[], None]:
    ctx.wait_hit("latency:DELETE", process)
    return lambda: None


# step -> (faults or timings to arm, how to reach the held moment, run flags)
STEPS: dict[str, tuple[Callable[[Ctx], None], Callable[[Ctx, subprocess.Popen[str]], Callable[[], None]], tuple]] = {
    "upload": (lambda ctx: ctx.target.faults({"route": route(UPLOAD, ctx), "kind": "latency", "after": True,
                                                "latency_s": HOLD_S}), hold_upload, ()),
    "file-processing": (lambda ctx: ctx.target.set_timings(file_processing_s=100000.0) or ctx.target.faults(
        {"route": r"GET /v1/files/[^/]+$", "kind": "latency", "latency_s": HOLD_S}), hold_file_processing, ()),
    "create": (lambda ctx: ctx.target.faults({"route": route(CREATE, ctx), "kind": "latency", "after": True,
                                                "latency_s": HOLD_S}), hold_create, ()),
    "wait": (lambda ctx: ctx.target.hold_jobs(), hold_wait, ()),
    "deploy": (lambda ctx: ctx.target.set_timings(deploy_s=100000.0), hold_deploy, ()),
    "smoke-test": (lambda ctx: ctx.target.faults({"route": route(CHAT, ctx), "kind": "latency",
                                                    "latency_s": HOLD_S}), hold_smoke, ()),
    "cleanup": (lambda ctx: ctx.target.faults({"route": route(DELETE, ctx), "kind": "latency", "after": True,
                                                 "latency_s": HOLD_S}), hold_cleanup, ("--cleanup", "always")),
}


def stop_then_resume(ctx: Ctx, step: str, sig: int) -> None:
    arm, reach, flags = STEPS[step]
    arm(ctx)
    process = ctx.start_run(*(flags or ("--cleanup", "never")))
    release = reach(ctx, process)
    stopped = ctx.signal(process, sig)
    if sig != signal.SIGKILL:
        expect(stopped.rc == 130, f"{signal.Signals(sig).name} at {step} should exit 130: {stopped.brief()}")
        expect("internal error" not in stopped.text.lower(), f"SIGTERM at {step}: {stopped.brief()}")
    run_id = stopped.doc.get("run_id") or ctx.latest_run_id()
    expect(run_id, f"the run stopped at {step} left no ledger record")
    ctx.track(run_id)
    ctx.target.clear_faults()
    release()
    resumed = ctx.cli("resume", run_id, "--json")
    if step == "cleanup":
        # the work was done before the cleanup began; resume finishes or reports, never crashes
        expect("internal error" not in resumed.text.lower(), f"resume after {step}: {resumed.brief()}")
    else:
        expect(resumed.rc == 0, f"resume after {signal.Signals(sig).name} at {step} failed: {resumed.brief()}")
        expect(resumed.doc.get("status") == "succeeded", f"resume ended {resumed.doc.get('status')!r}")
    if ctx.target.name != "azure-serverless":
        one_upload_per_file(ctx, run_id)


def _register(step: str, sig: int, *targets: str) -> None:
    name = {signal.SIGKILL: "kill-9", signal.SIGTERM: "sigterm", signal.SIGINT: "ctrl-c"}[sig] + f"-at-{step}-then-resume"
    scenario(name, *targets, issue="signals")(lambda ctx: stop_then_resume(ctx, step, sig))


for _step in ("upload", "file-processing", "create", "wait", "smoke-test", "cleanup"):
    for _sig in (signal.SIGKILL, signal.SIGTERM):
        _register(_step, _sig, "openai")
_register("file-processing", signal.SIGINT, "openai")  # issue 9 point 5: Ctrl-C while the file processes
_register("create", signal.SIGKILL, "azure-openai")
_register("deploy", signal.SIGKILL, "azure-openai")
_register("upload", signal.SIGTERM, "azure-openai")
_register("deploy", signal.SIGTERM, "azure-serverless")


# ----------------------------------------------------------------- local provider


def local_job_dir(ctx: Ctx, process: subprocess.Popen[str] | None = None):  # type: ignore[no-untyped-def]
    jobs = ctx.home() / "local" / "jobs"
    return ctx.wait_for("the local job to start training (a checkpoint)", lambda: next(
        (path for path in jobs.glob("*") if list(path.glob("checkpoints/step-*"))), None), timeout=180,
        process=process)


@scenario("local-worker-death-then-resume", "local", issue="signals")
def local_worker_death(ctx: Ctx) -> None:
    created = ctx.run("--no-wait")
    expect(created.rc == 0, f"run --no-wait failed: {created.brief()}")
    job_dir = local_job_dir(ctx)
    os.kill(int((job_dir / "worker.pid").read_text()), signal.SIGKILL)
    resumed = ctx.cli("resume", created.doc["run_id"], "--json", timeout=300)
    expect(resumed.rc == 0, f"resume after the worker died failed: {resumed.brief()}")
    expect(resumed.doc.get("status") == "succeeded", f"resume ended {resumed.doc.get('status')!r}")


@scenario("local-kill-9-in-wait-then-resume", "local", issue="signals")
def local_kill_in_wait(ctx: Ctx) -> None:
    process = ctx.start_run()
    local_job_dir(ctx, process)
    ctx.signal(process, signal.SIGKILL)
    run_id = ctx.latest_run_id()
    ctx.track(run_id)
    resumed = ctx.cli("resume", run_id, "--json", timeout=300)
    expect(resumed.rc == 0, f"resume after kill -9 failed: {resumed.brief()}")
    expect(resumed.doc.get("status") == "succeeded", f"resume ended {resumed.doc.get('status')!r}")


@scenario("local-no-wait-then-cleanup-refuses-active-job", "local", issue="2")
def local_cleanup_active(ctx: Ctx) -> None:
    created = ctx.run("--no-wait")
    expect(created.rc == 0, f"run --no-wait failed: {created.brief()}")
    job_dir = local_job_dir(ctx)
    refused = ctx.cli("cleanup", created.doc["run_id"], "--json")
    expect(refused.rc != 0, f"cleanup of an active local job went ahead: {refused.brief()}")
    expect((job_dir / "train.jsonl").exists(), "cleanup deleted the data of a running local job")
