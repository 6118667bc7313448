"""Issue 9 point 2: cleanup and resume. Progress never moves because of a cleanup; a cleanup
never deletes what an active job still uses; ``resume`` after a cleanup says what is gone and
exits non-zero when the work asked for can no longer be completed."""

from __future__ import annotations

import json
import signal

from tests.faults import records
from tests.faults.harness import CHECKED_KINDS, Ctx, expect
from tests.faults.matrix import scenario
from tests.faults.scenarios_transport import CHAT, route

CLOUD = ("openai", "azure-openai", "azure-serverless")


def job_status(ctx: Ctx, run_id: str) -> list[str]:
    return [str(info.get("status")) for info in ctx.jobs_of(run_id).values()]


def files_of_run(ctx: Ctx) -> set[str]:
    kind = "data_asset" if ctx.target.name == "azure-serverless" else "file"
    return {key for key in ctx.snapshot()[kind] if key not in ctx.baseline[kind]}


@scenario("smoke-failure-cleanup-then-resume", "openai", "azure-openai", issue="2")
def smoke_failure_then_resume(ctx: Ctx) -> None:
    ctx.target.faults({"route": route(CHAT, ctx), "status": 400, "times": -1, "code": "content_filter",
                       "message": "The response was filtered due to the prompt triggering content management policy."})
    result = ctx.run("--cleanup", "on-failure")
    expect(result.rc != 0, f"a refused smoke test should fail the run: {result.brief()}")
    ctx.target.clear_faults()
    resumed = ctx.cli("resume", result.doc.get("run_id") or ctx.latest_run_id(), "--json")
    expect(resumed.rc != 0, f"resume after the cleanup deleted the model reported success: {resumed.brief()}")
    expect(resumed.doc.get("status") != "succeeded", "resume after cleanup says succeeded with no model")


@scenario("ctrl-c-in-wait-on-failure-then-resume", "openai", "azure-openai", issue="2")
def ctrl_c_in_wait_then_resume(ctx: Ctx) -> None:
    ctx.target.hold_jobs()
    process = ctx.start_run("--cleanup", "on-failure")
    ctx.wait_new_job(ctx.baseline, process, status="running")
    uploads = files_of_run(ctx)
    stopped = ctx.signal(process, signal.SIGINT)
    expect(stopped.rc == 130, f"Ctrl-C should exit 130: {stopped.brief()}")
    run_id = stopped.doc.get("run_id") or ctx.latest_run_id()
    ctx.track(run_id)
    expect(uploads <= files_of_run(ctx), "Ctrl-C with on-failure deleted the training file of a running job")
    ctx.target.release_jobs()
    resumed = ctx.cli("resume", run_id, "--json")
    expect(resumed.rc == 0, f"resume after Ctrl-C failed: {resumed.brief()}")
    expect(resumed.doc.get("fine_tuned_model"), "resume finished with no model recorded (the job's model is orphaned)")


@scenario("no-wait-then-cleanup-refuses-active-job", "openai", "azure-serverless", issue="2")
def no_wait_then_cleanup(ctx: Ctx) -> None:
    ctx.target.hold_jobs()
    result = ctx.run("--no-wait", "--cleanup", "never")
    expect(result.rc == 0, f"run --no-wait failed: {result.brief()}")
    run_id = result.doc["run_id"]
    uploads = files_of_run(ctx)
    refused = ctx.cli("cleanup", run_id, "--json")
    expect(refused.rc != 0, f"cleanup of a run whose job is active went ahead: {refused.brief()}")
    expect(uploads <= files_of_run(ctx), "cleanup deleted the file under a running job")
    cancelled = ctx.cli("cleanup", run_id, "--cancel", "--json")
    expect(cancelled.rc == 0, f"cleanup --cancel failed: {cancelled.brief()}")
    statuses = job_status(ctx, run_id)
    expect(statuses and all(s.lower() in ("cancelled", "canceled") for s in statuses),
           f"cleanup --cancel left the job {statuses}")


@scenario("older-than-skips-active-runs", "openai", issue="2")
def older_than_skips_active(ctx: Ctx) -> None:
    ctx.target.hold_jobs()
    result = ctx.run("--no-wait", "--cleanup", "never")
    expect(result.rc == 0, f"run --no-wait failed: {result.brief()}")
    run_id = result.doc["run_id"]
    uploads = files_of_run(ctx)
    swept = ctx.cli("cleanup", "--older-than", "0s", "--json")
    expect(swept.rc == 0, f"cleanup --older-than failed: {swept.brief()}")
    expect(uploads <= files_of_run(ctx), "cleanup --older-than deleted the file of an active run")
    expect(not any(s.lower() in ("cancelled", "canceled") for s in job_status(ctx, run_id)),
           "cleanup --older-than cancelled an active job")
    expect("skip" in swept.text.lower() or "active" in swept.text.lower(),
           f"cleanup --older-than does not say it skipped the active run: {swept.out[-300:]}")
    status = ctx.status(run_id)
    expect(not (status.get("cleanup") or {}).get("deleted") and status.get("status") != "cleaned_up",
           "the skipped active run is marked cleaned up")


@scenario("validation-failure-then-fixed-data", "openai", issue="2")
def validation_failure_then_fixed(ctx: Ctx) -> None:
    good = ctx.data.read_text()
    ctx.data.write_text(good + '{"messages": [{"role": "user", "content": "no answer"}]}\n{not json\n')
    failed = ctx.run("--cleanup", "on-failure", jobs=1)
    expect(failed.rc == 2, f"invalid data should exit 2: {failed.brief()}")
    expect(not files_of_run(ctx), "a validation failure uploaded something")
    ctx.data.write_text(good)
    resumed = ctx.cli("resume", failed.doc.get("run_id") or ctx.latest_run_id(), "--json")
    expect(resumed.rc == 0, f"resume with fixed data failed: {resumed.brief()}")
    expect(resumed.doc.get("training_file_id"), "resume ran without a training file")


@scenario("cleanup-twice-deletes-nothing-more", "openai", "azure-serverless", issue="2")
def cleanup_twice(ctx: Ctx) -> None:
    result = ctx.run("--cleanup", "never")
    expect(result.rc == 0, f"run failed: {result.brief()}")
    run_id = result.doc["run_id"]
    first = ctx.cli("cleanup", run_id, "--json")
    expect(first.rc == 0, f"cleanup failed: {first.brief()}")
    snap = ctx.snapshot()
    second = ctx.cli("cleanup", run_id, "--json")
    expect(second.rc == 0, f"second cleanup failed: {second.brief()}")
    after = ctx.snapshot()
    for kind in CHECKED_KINDS:
        expect(set(records.present(after, kind)) == set(records.present(snap, kind)),
               f"the second cleanup changed the service's {kind}s")
    resumed = ctx.cli("resume", run_id, "--json")
    expect(resumed.rc != 0, f"resume after a full cleanup reported success: {resumed.brief()}")
    expect("deleted" in resumed.text.lower() or "gone" in resumed.text.lower(),
           "resume after cleanup does not say what was deleted")


@scenario("keep-model-cleanup-then-resume", "openai", issue="2")
def keep_model_then_resume(ctx: Ctx) -> None:
    result = ctx.run("--cleanup", "never")
    expect(result.rc == 0, f"run failed: {result.brief()}")
    run_id = result.doc["run_id"]
    kept = ctx.cli("cleanup", run_id, "--keep-model", "--json")
    expect(kept.rc == 0, f"cleanup --keep-model failed: {kept.brief()}")
    model = result.doc["fine_tuned_model"]
    expect(model in ctx.snapshot()["model"], "cleanup --keep-model deleted the model")
    status = ctx.status(run_id)
    expect(json.dumps(status).count(model), "the ledger lost the kept model")
