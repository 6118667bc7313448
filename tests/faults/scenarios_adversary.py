"""Issue 16: what an adversarial user, a second machine or a crashing process still broke.
Each row is judged, like every row, from the emulator's own records after the harness's
cleanup (one job per run, nothing left, nothing of anyone else's touched)."""

from __future__ import annotations

import signal

from tests.faults.harness import Ctx, expect
from tests.faults.matrix import scenario
from tests.faults.scenarios_transport import CREATE, route
from tests.faults.targets import post

RUNNER_AHEAD_S = 240.0  # a CI runner's clock four minutes fast: inside the 15-minute allowance


@scenario("skewed-clock-kill-9-at-create-then-resume", "openai", issue="16.7")
def skewed_clock_resume(ctx: Ctx) -> None:
    """The runner's clock is ahead of the service's (the emulator's clock is set back): the job
    it created before being killed is older than the run id says, and must still be found."""
    post(ctx.target.control_url, "/_emulator/advance", {"seconds": -RUNNER_AHEAD_S})
    try:
        ctx.target.faults({"route": route(CREATE, ctx), "kind": "latency", "latency_s": 60.0, "after": True})
        process = ctx.start_run("--cleanup", "never")
        ctx.wait_new_job(ctx.baseline, process)
        ctx.signal(process, signal.SIGKILL)
        run_id = ctx.latest_run_id()
        expect(run_id, "the killed run left no ledger record")
        ctx.track(run_id)  # the harness checks that exactly one job carries its tag
        ctx.target.clear_faults()
        resumed = ctx.cli("resume", run_id, "--json")
        expect(resumed.rc == 0, f"resume with a skewed clock failed: {resumed.brief()}")
        jobs = ctx.jobs_of(run_id)
        expect(len(jobs) == 1, f"resume with a fast clock made another job: {sorted(jobs)}")
    finally:
        post(ctx.target.control_url, "/_emulator/advance", {"seconds": RUNNER_AHEAD_S})


MODEL_DELETE = {"openai": r"DELETE /v1/models/", "azure-openai": r"DELETE /openai/.*fine_tuning/jobs/"}


@scenario("kill-9-inside-cleanup-after-the-model-delete-then-resume", "openai", "azure-openai", issue="16.3")
def kill_inside_cleanup(ctx: Ctx) -> None:
    """``cloudtune cleanup`` is killed after the service deleted the model, before the answer
    arrived: ``resume`` must not report success for a model the service no longer has."""
    result = ctx.run("--cleanup", "never", "--no-deploy")
    expect(result.rc == 0, f"run failed: {result.brief()}")
    run_id, model = result.doc["run_id"], result.doc["fine_tuned_model"]
    ctx.target.faults({"route": route(MODEL_DELETE, ctx), "kind": "latency", "latency_s": 60.0, "after": True})
    cleanup = ctx.start("cleanup", run_id, "--json")
    ctx.wait_for("the service to delete the model (the answer held back)",
                 lambda: not any(run_id == info.get("run") for info in ctx.snapshot()["model"].values()),
                 process=cleanup)
    ctx.signal(cleanup, signal.SIGKILL)
    ctx.target.clear_faults()
    resumed = ctx.cli("resume", run_id, "--json")
    expect(resumed.rc != 0 and resumed.doc.get("status") != "succeeded",
           f"resume reported success for the deleted model {model}: {resumed.brief()}")
    expect("deleted" in resumed.text, f"resume does not say the model was deleted: {resumed.brief()}")
