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


@scenario("hand-made-deployment-with-the-runs-name-seen-from-a-fresh-home", "azure-openai", issue="16.4")
def hand_made_deployment_from_fresh_home(ctx: Ctx) -> None:
    """A person made a deployment (no run tag) under the run's default name; a CI runner with an
    empty home rebuilds the run: the deployment is recorded ``foreign`` and survives every
    cleanup. It is added to the scenario's "before" records, so the harness's own checks (nothing
    that existed before is deleted or repointed) guard it to the end; the model it serves cannot
    be deleted while it does, so the run is left to its owner (the harness does not clean it)."""
    started = ctx.cli(*ctx.run_args("--no-deploy", "--cleanup", "never"), home="gone")
    expect(started.rc == 0, f"run failed: {started.brief()}")
    run_id, model = started.doc["run_id"], started.doc["fine_tuned_model"]
    ctx.track(run_id, "fresh", cleanup=False)  # the new machine drives it from now on
    name = f"ct-{run_id}".lower()
    post(ctx.target.control_url, "/_emulator/external-deployment", {"account": "ct-aoai", "name": name, "model": model})
    key = f"ct-aoai/{name}"
    ctx.baseline["deployment"][key] = ctx.snapshot()["deployment"][key]  # a person's, like the bystanders
    spec = [arg for arg in ctx.run_args("--no-deploy")[1:] if arg != "--json"]
    resumed = ctx.cli("resume", run_id, *spec, "--json", home="fresh")
    expect(resumed.rc == 0, f"resume on a fresh home failed: {resumed.brief()}")
    states = {r["id"]: r["state"] for r in resumed.doc.get("resources", []) if r["kind"] == "deployment"}
    expect(states == {name: "foreign"}, f"the rebuild recorded the hand-made deployment {name} as {states}")
    kept = ctx.cli("cleanup", run_id, "--keep-model", "--json", home="fresh")
    expect(kept.rc == 0, f"cleanup --keep-model failed: {kept.brief()}")
    ctx.cli("cleanup", run_id, "--json", home="fresh")  # the model is in use by the person's deployment
    expect(key in ctx.snapshot()["deployment"], f"the fresh home's cleanup deleted the person's {name}")


@scenario("endless-has-more-status-watch-cleanup-return", "openai", issue="16.12")
def endless_has_more(ctx: Ctx) -> None:
    """Every list answers its first page again with ``has_more: true`` whatever the cursor (a static
    mock of the published spec): status, watch and cleanup still return, and say a list was cut."""
    result = ctx.run("--cleanup", "never", "--no-deploy")
    expect(result.rc == 0, f"run failed: {result.brief()}")
    run_id = result.doc["run_id"]
    post(ctx.target.control_url, "/_emulator/openai/settings", {"lists_never_end": True})
    try:
        for args in (("status", run_id, "--json"), ("watch", run_id, "--json")):
            shown = ctx.cli(*args, timeout=90)
            expect(shown.rc == 0, f"{args[0]} against endless lists failed: {shown.brief()}")
            expect("stopped listing" in shown.text, f"{args[0]} did not say a list was cut: {shown.brief()}")
        cleaned = ctx.cli("cleanup", run_id, "--json", timeout=90)
        expect(cleaned.rc == 0, f"cleanup against endless lists failed: {cleaned.brief()}")
    finally:
        post(ctx.target.control_url, "/_emulator/openai/settings", {"lists_never_end": False})
