"""Issue 9 points 1, 3 and 4: a run owns exactly what it created. Two runs sharing a
deployment name, two processes driving one run, and two runs uploading identical files must
never delete, repoint or adopt each other's resources."""

from __future__ import annotations

import signal
import time

from tests.faults.harness import Ctx, ScenarioFailed, expect
from tests.faults.matrix import scenario
from tests.faults.scenarios_transport import CREATE, UPLOAD, route

SHARED_NAME = "prod"
DEPLOYING = ("openai", "azure-openai", "azure-serverless")


def _home_for_second_run(ctx: Ctx) -> str:
    # OpenAI deployment names are kept per CLOUDTUNE_HOME by the provider, so two runs can
    # only share one on the same home; on Azure the name lives on the service.
    return "a" if ctx.target.name == "openai" else "b"


def served_by(ctx: Ctx, name: str, home: str = "a") -> str | None:
    """The model the service's deployment called ``name`` serves (None: no such deployment)."""
    snap = ctx.snapshot()
    if ctx.target.name == "openai":
        key, kind = f"{ctx.home(home).name}/{name}", "deployment"
    elif ctx.target.name == "azure-openai":
        key, kind = f"ct-aoai/{name}", "deployment"
    else:
        key, kind = f"ct-project/{name}", "endpoint"
    info = snap[kind].get(key)
    return None if info is None or info.get("deleting") else (info.get("model") or "?")


def deployed_run_a(ctx: Ctx) -> tuple[str, str]:
    """Run A deployed under the shared name (kept: --cleanup never); returns (run_id, model)."""
    result = ctx.run("--cleanup", "never", "--deployment-name", SHARED_NAME, home="a")
    expect(result.rc == 0, f"run A failed: {result.brief()}")
    model = result.doc.get("fine_tuned_model")
    expect(served_by(ctx, SHARED_NAME) is not None, f"run A's deployment {SHARED_NAME} is not on the service")
    return result.doc["run_id"], served_by(ctx, SHARED_NAME) or model


def a_still_served(ctx: Ctx, model_a: str, after: str) -> None:
    now = served_by(ctx, SHARED_NAME)
    expect(now is not None, f"run A's deployment {SHARED_NAME} was deleted by {after}")
    expect(now == model_a, f"run A's deployment {SHARED_NAME} was repointed to {now} by {after}")


@scenario("shared-name-refused-deploy-on-failure-cleanup", *DEPLOYING, issue="1")
def shared_name_refused_deploy(ctx: Ctx) -> None:
    _, model_a = deployed_run_a(ctx)
    home_b = _home_for_second_run(ctx)
    second = ctx.run("--cleanup", "on-failure", "--deployment-name", SHARED_NAME, home=home_b)
    expect(second.rc != 0, f"run B deployed over run A's {SHARED_NAME}: {second.brief()}")
    a_still_served(ctx, model_a, "run B's on-failure cleanup")
    cleaned = ctx.cli("cleanup", second.doc.get("run_id") or ctx.latest_run_id(home_b), "--json", home=home_b)
    expect(cleaned.rc == 0, f"cleanup of run B failed: {cleaned.brief()}")
    a_still_served(ctx, model_a, "`cleanup` of run B")


@scenario("shared-name-deploy-name-then-cleanup", "openai", "azure-openai", issue="1")
def shared_name_deploy_command(ctx: Ctx) -> None:
    _, model_a = deployed_run_a(ctx)
    home_b = _home_for_second_run(ctx)
    second = ctx.run("--cleanup", "never", "--no-deploy", home=home_b)
    expect(second.rc == 0, f"run B failed: {second.brief()}")
    run_b = second.doc["run_id"]
    deploy = ctx.cli("deploy", run_b, "--name", SHARED_NAME, "--json", home=home_b)
    expect(deploy.rc != 0, f"`deploy --name {SHARED_NAME}` took over run A's deployment: {deploy.brief()}")
    a_still_served(ctx, model_a, "`deploy --name`")
    cleaned = ctx.cli("cleanup", run_b, "--json", home=home_b)
    expect(cleaned.rc == 0, f"cleanup of run B failed: {cleaned.brief()}")
    a_still_served(ctx, model_a, "`cleanup` of run B")


@scenario("undeploy-of-never-deployed-run", "openai", "azure-openai", issue="1")
def undeploy_never_deployed(ctx: Ctx) -> None:
    _, model_a = deployed_run_a(ctx)
    home_b = _home_for_second_run(ctx)
    second = ctx.run("--cleanup", "never", "--no-deploy", "--deployment-name", SHARED_NAME, home=home_b)
    expect(second.rc == 0, f"run B failed: {second.brief()}")
    ctx.cli("undeploy", second.doc["run_id"], "--json", home=home_b)
    a_still_served(ctx, model_a, "`undeploy` of a run that never deployed")


@scenario("two-concurrent-resumes", "openai", "azure-openai", issue="3")
def two_concurrent_resumes(ctx: Ctx) -> None:
    # a run stopped before its job exists (killed while the create was held back)
    ctx.target.faults({"route": route(CREATE, ctx), "kind": "latency", "latency_s": 30.0})
    first = ctx.start_run("--cleanup", "never")
    ctx.wait_hit("latency:POST", first)
    first.send_signal(signal.SIGKILL)
    ctx.finish_process(first)
    run_id = ctx.latest_run_id()
    expect(run_id, "the killed run left no ledger record")
    ctx.track(run_id)
    ctx.target.clear_faults()
    # both resumes meet a slow create (the service takes 2 s to answer)
    ctx.target.faults({"route": route(CREATE, ctx), "kind": "latency", "latency_s": 2.0, "times": 2})
    one = ctx.start("resume", run_id, "--json")
    two = ctx.start("resume", run_id, "--json")
    results = [ctx.finish_process(one), ctx.finish_process(two)]
    codes = sorted(r.rc for r in results)
    expect(codes in ([0, 6], [0, 0]), f"two resumes exited {codes}; expected one to win and the other to "
                                      f"exit 6 (run locked): {[r.brief() for r in results]}")
    if codes == [0, 6]:
        loser = next(r for r in results if r.rc == 6)
        expect("pid" in loser.text.lower() or any(ch.isdigit() for ch in loser.err), "the lock refusal names no holder")


@scenario("cleanup-from-another-shell-during-run", "openai", "azure-openai", issue="3")
def cleanup_during_run(ctx: Ctx) -> None:
    ctx.target.hold_jobs()  # the job stays running while the second shell acts
    process = ctx.start_run("--cleanup", "never")
    ctx.wait_new_job(ctx.baseline, process)
    run_id = ctx.latest_run_id()
    ctx.track(run_id)
    files_before = {k for k, i in ctx.snapshot()["file"].items() if k not in ctx.baseline["file"]}
    other = ctx.cli("cleanup", run_id, "--json")
    expect(other.rc != 0, f"cleanup from a second shell went ahead on a run being driven: {other.brief()}")
    files_now = {k for k, i in ctx.snapshot()["file"].items() if k not in ctx.baseline["file"]}
    expect(files_before <= files_now, f"the second shell deleted the running job's file(s) {files_before - files_now}")
    ctx.target.release_jobs()
    result = ctx.finish_process(process)
    expect(result.rc == 0, f"the driving run did not finish: {result.brief()}")
    expect(result.doc.get("status") == "succeeded", f"driving run status {result.doc.get('status')!r}")


@scenario("interrupted-uploads-two-runs-identical-files", "openai", "azure-openai", issue="4")
def interrupted_uploads_identical_files(ctx: Ctx) -> None:
    # run A's upload is stored but its answer never arrives (A is killed); run B uploads the
    # same bytes and keeps its file; A resumes and cleans up: B's file must survive
    ctx.target.faults({"route": route(UPLOAD, ctx), "kind": "latency", "latency_s": 30.0, "after": True})
    first = ctx.start_run("--cleanup", "never", home="a")
    ctx.wait_for("run A's upload to be stored", lambda: any(
        k not in ctx.baseline["file"] for k in ctx.snapshot()["file"]), process=first)
    first.send_signal(signal.SIGKILL)
    ctx.finish_process(first)
    run_a = ctx.latest_run_id("a")
    ctx.track(run_a, "a")
    ctx.target.clear_faults()
    second = ctx.run("--cleanup", "never", "--no-deploy", home="b")
    expect(second.rc == 0, f"run B failed: {second.brief()}")
    file_b = second.doc.get("training_file_id")
    resumed = ctx.cli("resume", run_a, "--json", home="a")
    expect(resumed.rc == 0, f"resume of run A failed: {resumed.brief()}")
    expect(resumed.doc.get("training_file_id") != file_b, "run A adopted run B's upload")
    cleaned = ctx.cli("cleanup", run_a, "--json", home="a")
    expect(cleaned.rc == 0, f"cleanup of run A failed: {cleaned.brief()}")
    expect(file_b in ctx.snapshot()["file"], f"cleaning run A deleted run B's file {file_b}")


@scenario("two-runs-same-data-assets", "azure-serverless", issue="4")
def shared_data_assets(ctx: Ctx) -> None:
    first = ctx.run("--cleanup", "never", "--no-deploy", home="a")
    second = ctx.run("--cleanup", "never", "--no-deploy", home="b")
    expect(first.rc == 0 and second.rc == 0, f"runs failed: {first.brief()} / {second.brief()}")
    mine_b = {k for k, i in ctx.snapshot()["data_asset"].items() if i.get("run") == second.doc["run_id"]}
    expect(mine_b, "run B's data assets do not carry its run tag (per-run names)")
    cleaned = ctx.cli("cleanup", first.doc["run_id"], "--json", home="a")
    expect(cleaned.rc == 0, f"cleanup of run A failed: {cleaned.brief()}")
    left = set(ctx.snapshot()["data_asset"])
    expect(mine_b <= left, f"cleaning run A deleted run B's data asset(s) {sorted(mine_b - left)}")


@scenario("cleanup-wait-lock-waits-for-the-driver", "openai", issue="3")
def cleanup_waits_for_lock(ctx: Ctx) -> None:
    ctx.target.hold_jobs()
    process = ctx.start_run("--cleanup", "never")
    ctx.wait_new_job(ctx.baseline, process)
    run_id = ctx.latest_run_id()
    ctx.track(run_id)
    mine = {k for k in ctx.snapshot()["file"] if k not in ctx.baseline["file"]}
    waiter = ctx.start("cleanup", run_id, "--json", "--wait-lock", "120")
    # observe the waiter while the driver holds the run: it must neither return nor delete
    observe_until = time.monotonic() + 4.0
    while time.monotonic() < observe_until and waiter.poll() is None:
        left = set(ctx.snapshot()["file"])
        expect(mine <= left, "`cleanup --wait-lock` deleted the file of a job still running")
        time.sleep(0.1)
    if waiter.poll() is not None:
        raise ScenarioFailed(f"`cleanup --wait-lock` returned while the run was driven: "
                             f"{ctx.finish_process(waiter).brief()}")
    ctx.target.release_jobs()
    result = ctx.finish_process(process)
    expect(result.rc == 0, f"the driving run did not finish: {result.brief()}")
    waited = ctx.finish_process(waiter)
    expect(waited.rc == 0, f"`cleanup --wait-lock` failed once the lock was free: {waited.brief()}")


@scenario("resume-on-an-empty-home-rebuilds-from-the-provider", "openai", "azure-openai", issue="survives")
def resume_on_empty_home(ctx: Ctx) -> None:
    # a CI runner is gone with its ledger: the run is found again by its tags on the service
    started = ctx.cli(*ctx.run_args("--no-wait", "--cleanup", "never"), home="gone")
    expect(started.rc == 0, f"run --no-wait failed: {started.brief()}")
    run_id = started.doc["run_id"]
    ctx.track(run_id, "fresh")  # the new machine drives it from now on (the old home is never used again)
    spec = ctx.run_args()[1:]  # the same flags as the original run, without the leading "run"
    resumed = ctx.cli("resume", run_id, *[a for a in spec if a != "--json"], "--json", home="fresh")
    expect(resumed.rc == 0, f"resume on an empty home failed: {resumed.brief()}")
    expect(resumed.doc.get("job_id") == started.doc.get("job_id"), "resume on an empty home did not find the job")
