"""Transport and service faults during a run: rate limits, 5xx bursts, connection resets and
read timeouts on every kind of call, and the service refusing or failing the work. Each run
must end with one job, no orphan upload, and (after cleanup) nothing left."""

from __future__ import annotations

from typing import Any

from tests.faults import records
from tests.faults.harness import CHECKED_KINDS, Ctx, Result, expect
from tests.faults.matrix import scenario

# Routes of each call, per target ("METHOD /path" regexes the emulator's faults match).
UPLOAD = {"openai": r"POST /v1/files$", "azure-openai": r"POST /openai/(v1/)?files$",
          "azure-serverless": r"PUT /.*/(data|datastores)/"}
CREATE = {"openai": r"POST /v1/fine_tuning/jobs$", "azure-openai": r"POST /openai/(v1/)?fine_tuning/jobs$",
          "azure-serverless": r"PUT /.*/jobs/[^/]+$"}
POLL = {"openai": r"GET /v1/fine_tuning/jobs/[^/]+$", "azure-openai": r"GET /openai/(v1/)?fine_tuning/jobs/[^/]+$",
        "azure-serverless": r"GET /.*/jobs/[^/]+$"}
DEPLOY = {"azure-openai": r"PUT /.*/deployments/[^/]+$", "azure-serverless": r"PUT /.*/serverlessEndpoints/[^/]+$"}
DELETE = {"openai": r"DELETE /v1/files/", "azure-openai": r"DELETE /.*/deployments/[^/]+$",
          "azure-serverless": r"DELETE /.*/serverlessEndpoints/[^/]+$"}
CHAT = {"openai": r"POST /v1/chat/completions$", "azure-openai": r"POST /openai/.*chat/completions$",
        "azure-serverless": r"POST .*chat/completions$"}


def route(table: dict[str, str], ctx: Ctx) -> str:
    return table[ctx.target.name]


def succeeds(ctx: Ctx, *extra: str, **env: str) -> dict[str, Any]:
    """A run through the armed faults ends in success with one job and a smoke-tested model."""
    result = ctx.run(*extra, **env)
    expect(result.rc == 0, f"run did not succeed: {result.brief()}")
    doc = result.doc
    expect(doc.get("status") == "succeeded", f"run status {doc.get('status')!r}, expected succeeded")
    expect(ctx.hits(), "no injected fault was hit: the scenario tested nothing")
    return doc


def one_upload_per_file(ctx: Ctx, run_id: str) -> None:
    """The service holds at most one upload per data file of this run (no orphan copies)."""
    snap = ctx.snapshot()
    kind = "data_asset" if ctx.target.name == "azure-serverless" else "file"
    names = [info.get("name") or key for key, info in snap[kind].items() if info.get("run") == run_id]
    expect(len(names) == len(set(names)), f"more than one upload of the same file: {sorted(names)}")
    untagged = [key for key, info in snap[kind].items() if not info.get("run") and key not in ctx.baseline[kind]]
    expect(not untagged, f"upload(s) without the run tag (cannot be told apart from another run's): {untagged}")


def left_by(ctx: Ctx, run_id: str) -> list[str]:
    """What of this run (its tag, or created during the scenario without one) is still there."""
    snap = ctx.snapshot()
    return [f"{kind} {key}" for kind in CHECKED_KINDS for key, info in records.present(snap, kind).items()
            if key not in ctx.baseline[kind] and info.get("run") in (run_id, None)]


ALL = ("openai", "azure-openai", "azure-serverless")


Fault = tuple[dict[str, str], dict[str, Any]]  # (the call's routes per target, the fault)


def on(call: dict[str, str], **fault: Any) -> Fault:
    return call, fault


def survives(name: str, targets: tuple[str, ...], *faults: Fault, issue: str = "faults", cleanup: str = "never",
             options: tuple[str, ...] = (), one_upload: bool = False) -> None:
    """A row whose run gets through the armed ``faults`` to success (one job, a smoke-tested
    model); with ``one_upload``, it also left at most one upload per data file."""

    def body(ctx: Ctx) -> None:
        ctx.target.faults(*({"route": route(call, ctx), **fault} for call, fault in faults))
        doc = succeeds(ctx, "--cleanup", cleanup, *options)
        if one_upload:
            one_upload_per_file(ctx, doc["run_id"])

    scenario(name, *targets, issue=issue)(body)


RESET = {"kind": "drop"}
RESET_AFTER = {"kind": "drop", "after": True}  # the service did the work, the client saw the reset

# faults a run gets through: name, targets, the fault armed on each call, then how the run is made
survives("429-with-retry-after", ("openai", "azure-openai"), on(UPLOAD, status=429, retry_after=0.2, times=2),
         on(POLL, status=429, retry_after=0.2, times=3), on(CHAT, status=429, retry_after=0.2, times=1))
survives("429-without-retry-after", ("openai",), on(CREATE, status=429, times=1), on(POLL, status=429, times=1))
survives("500-burst-on-poll", ("openai", "azure-serverless"), on(POLL, status=500, times=4))
survives("503-burst-on-create", ("azure-openai",), on(CREATE, status=503, times=2))
survives("500-after-create-answer-lost", ("openai", "azure-openai"), on(CREATE, status=500, after=True))
# the service stored the file, the client saw a 502: no second copy, nothing left with --cleanup always
survives("502-after-stored-upload", ("openai", "azure-openai"), on(UPLOAD, status=502, after=True), issue="5",
         cleanup="always", one_upload=True)
survives("reset-during-upload", ("openai", "azure-serverless"), on(UPLOAD, **RESET), one_upload=True)
survives("reset-after-upload-stored", ("azure-openai",), on(UPLOAD, **RESET_AFTER), issue="5", one_upload=True)
survives("reset-during-create", ("azure-serverless",), on(CREATE, **RESET))
survives("reset-after-create", ("openai",), on(CREATE, **RESET_AFTER))
survives("reset-during-poll", ("azure-openai",), on(POLL, **RESET, times=3))
survives("reset-during-deploy", ("azure-openai", "azure-serverless"), on(DEPLOY, **RESET))


@scenario("reset-during-delete", "openai", "azure-openai", issue="faults")
def reset_during_delete(ctx: Ctx) -> None:
    # the run's own cleanup meets a reset: it either retries or reports what is left, and a
    # later `cleanup` finishes (the final check: nothing left, nothing foreign touched)
    ctx.target.faults({"route": route(DELETE, ctx), "kind": "drop"})
    result = ctx.run("--cleanup", "always")
    expect(ctx.hits(), "the delete was never reached")
    if result.rc == 0:
        left = left_by(ctx, result.doc["run_id"])
        expect(not left, f"run exited 0 with --cleanup always but left {left}")
    else:
        expect("internal error" not in result.text.lower(), f"the failed delete is not reported: {result.brief()}")


# the client gives up after 1 s; the answer comes after 4 s (with `after`, the work was done:
# the job made or the file stored, still exactly one of each)
TIMEOUT_1S = ("-o", "request_timeout_s=1")
LATE = {"kind": "latency", "latency_s": 4.0}

survives("read-timeout-on-poll", ("openai",), on(POLL, **LATE, times=1), options=TIMEOUT_1S)
survives("read-timeout-after-create", ("openai",), on(CREATE, **LATE, after=True), options=TIMEOUT_1S)
survives("read-timeout-after-upload", ("openai",), on(UPLOAD, **LATE, after=True), issue="5", options=TIMEOUT_1S,
         one_upload=True)


@scenario("quota-refusal-on-create", "openai", issue="faults")
def quota_refusal_on_create(ctx: Ctx) -> None:
    ctx.target.faults({"route": route(CREATE, ctx), "status": 429, "code": "insufficient_quota", "times": -1,
                       "message": "You exceeded your current quota, please check your plan and billing details."})
    result = ctx.run("--cleanup", "on-failure", jobs=0)
    expect(result.rc == 4, f"quota refusal should exit 4: {result.brief()}")


@scenario("quota-refusal-on-deploy", "azure-openai", issue="faults")
def quota_refusal_on_deploy(ctx: Ctx) -> None:
    ctx.target.set_rules(deployment_capacity_quota=0)
    result = ctx.run("--cleanup", "on-failure")
    expect(result.rc == 4, f"deployment quota refusal should exit 4: {result.brief()}")
    expect("quota" in result.text.lower(), "the quota refusal is not named")


def fail_stalled_job(ctx: Ctx, stage_timing: str, message: str, status: str | None = None, **code: str) -> Result:
    """On Azure: a run whose job stays in one stage (``stage_timing``, an emulator timing) until
    the scenario fails it there, as the service would; the finished run's result."""
    ctx.target.set_timings(**{stage_timing: 100000.0})
    process = ctx.start_run("--cleanup", "on-failure")
    job = ctx.wait_new_job(ctx.baseline, process, status=status)
    ctx.target.fail_job(job, message, **code)
    result = ctx.finish_process(process)
    ctx.track(result.doc.get("run_id") or ctx.latest_run_id(), jobs=1)
    return result


@scenario("job-fails-in-validation", "openai", "azure-openai", issue="faults")
def job_fails_in_validation(ctx: Ctx) -> None:
    if ctx.target.name == "openai":
        ctx.target.faults({"kind": "fail_job", "stage": "validating_files", "code": "invalid_training_file",
                           "message": "Invalid file format. Line 3, message 1: unexpected key."})
        result = ctx.run("--cleanup", "on-failure")
    else:  # still validating when the scenario fails it
        result = fail_stalled_job(ctx, "validating_s", "Training file validation failed at line 3: unexpected key.")
    expect(result.rc == 1, f"a job failing validation should exit 1: {result.brief()}")
    expect(result.doc.get("status") == "failed", f"run status {result.doc.get('status')!r}, expected failed")


@scenario("job-fails-while-running", "openai", "azure-serverless", issue="faults")
def job_fails_while_running(ctx: Ctx) -> None:
    if ctx.target.name == "openai":
        ctx.target.faults({"kind": "fail_job", "stage": "running", "code": "server_error",
                           "message": "The job failed due to an internal error."})
        result = ctx.run("--cleanup", "on-failure")
    else:
        running = "running" if ctx.target.name == "azure-openai" else None
        result = fail_stalled_job(ctx, "running_s", "The job failed due to an internal error.", status=running,
                                  code="internalError")
    expect(result.rc == 1, f"a failed job should exit 1: {result.brief()}")


@scenario("deployment-fails", "azure-openai", "azure-serverless", issue="faults")
def deployment_fails(ctx: Ctx) -> None:
    ctx.target.set_timings(deploy_s=100000.0)  # stays Creating until the scenario fails it
    process = ctx.start_run("--cleanup", "on-failure")
    kind = "deployment" if ctx.target.name == "azure-openai" else "endpoint"
    key = ctx.wait_for(f"a new {kind}", lambda: next(
        (k for k in ctx.snapshot()[kind] if k not in ctx.baseline[kind]), None), process=process)
    store = ctx.target.app.store
    with ctx.target.app.lock:
        table = store.cs_deployments if kind == "deployment" else store.endpoints
        table[tuple(key.split("/", 1))]["failed"] = True
    result = ctx.finish_process(process)
    ctx.track(result.doc.get("run_id") or ctx.latest_run_id(), jobs=1)
    expect(result.rc not in (0, 5, 130), f"a failed deployment should fail the run: {result.brief()}")
