"""Azure OpenAI fine-tuning jobs, as the data plane answers them on each API surface.

Rules enforced (from :mod:`cloudtune.service_facts.azure_openai`, where the sources are cited):

* version gating: the GA v1 surface (``/openai/v1/...``) and dated versions from
  ``2025-04-01-preview`` accept ``trainingType``, ``method`` and ``metadata``, report the
  ``pausing`` / ``paused`` / ``resuming`` states and have pause/resume; older dated versions
  (``2024-10-21``) refuse those fields (400) and show a paused job as ``running``;
* the training type: a request without ``trainingType`` trains Standard (regional); a model x training
  type x region the service does not offer is refused with the service's own misleading message,
  "The specified base model does not support fine-tuning";
* a ``developerTier`` job is paused and resumed by the service on its own halfway through training;
* ``DELETE /openai/fine_tuning/jobs/{id}`` exists only on dated versions (documented in 2024-10-21):
  it deletes the job's model and checkpoints, refused (409) while any of them is deployed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.service_facts import azure_openai as rules
from cloudtune.service_facts import azure_rft

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store

TERMINAL = ("succeeded", "failed", "cancelled")
PAUSE_STATES = ("pausing", "paused", "resuming")


def err(status: int, code: str, message: str, param: str | None = None) -> HTTPError:
    return HTTPError(status, {"error": {"code": code, "message": message, "param": param, "type": None}})


def _hex() -> str:
    return uuid.uuid4().hex


def api_version(request: Request) -> str:
    """``v1`` / ``preview`` on the v1 surface, else the dated ``api-version`` (required there)."""
    if request.path.lower().startswith("/openai/v1/"):
        return "preview" if request.arg("api-version") == "preview" else "v1"
    version = request.arg("api-version")
    if not version:
        raise err(404, "404", "Resource not found (the dated surface needs ?api-version=...).")
    return version


def has_job_features(version: str) -> bool:
    return version in ("v1", "preview") or version >= rules.FEATURES_FROM_VERSION


def _validate_jsonl(content: bytes) -> tuple[int, str] | None:
    """(line, problem) for the first example the service would refuse, else None."""
    text = content.decode("utf-8", "replace").lstrip("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 1:
        return 1, "the training file has no examples"
    for number, line in enumerate(lines, 1):
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            return number, "invalid JSON"
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            return number, "each example needs a 'messages' list with at least one assistant message"
    return None


def _validate_rft(content: bytes, grader: Any) -> tuple[int, str] | None:
    found = azure_rft.data_problems(content, grader, limit=1)
    return found[0] if found else None


def _plan(store: "Store", job: dict[str, Any]) -> list[tuple[float, str, str, dict[str, Any]]]:
    t = store.timeline
    plan: list[tuple[float, str, str, dict[str, Any]]] = [(0.0, "pending", "Job enqueued. Validating training file.", {})]
    if job["problem"] is not None:
        plan.append((t.validating_s, "failed", f"Training file validation failed at line {job['problem'][0]}: "
                     f"{job['problem'][1]}", {}))
        return plan
    start = t.validating_s + t.queued_s
    plan.append((t.validating_s, "notRunning", "Training file validated. Waiting for capacity.", {}))
    plan.append((start, "running", "Training started.", {}))
    half = t.steps // 2
    pause_s = t.developer_pause_s if job.get("training_type") == "developerTier" else 0.0
    rft = (job.get("method") or {}).get("type") == "reinforcement"
    price = azure_rft.hourly_price(rules.base_model(job["model"]).short) if rft and rules.base_model(job["model"]) else None
    # RFT bills per training hour (t.rft_hour_s emulated seconds each); at the cap the service pauses the job
    # and keeps a deployable checkpoint; a user resume goes on with no further limit (how-to-reinforcement-...)
    hour_s = t.rft_hour_s or t.running_s / 10
    cap_at = start + hour_s * azure_rft.PAUSE_AT_USD / price if price else None
    for step in range(1, t.steps + 1):
        at = start + t.running_s * step / (t.steps + 1) + (pause_s if step > half else 0.0)
        if pause_s and step == half + 1:
            # Developer training runs on spare capacity: the service preempts and resumes it itself
            # (openai/how-to/fine-tuning-cost-management.md)
            before = start + t.running_s * half / (t.steps + 1)
            plan.append((before + 0.1, "pausing", "Job is being paused by the service: developer-tier capacity was "
                         "reclaimed. It resumes on its own.", {}))
            plan.append((before + 0.2, "paused", "Job paused by the service (developer tier).", {}))
            plan.append((before + pause_s - 0.1, "resuming", "Capacity available again: resuming the job.", {}))
            plan.append((before + pause_s, "running", "Job resumed.", {}))
        if cap_at is not None and plan[-1][0] < cap_at <= at:
            plan.append((cap_at, "paused", f"Job paused: its training bill reached the ${azure_rft.PAUSE_AT_USD:,.0f} cap "
                         f"({azure_rft.PAUSE_AT_USD / price:.2f} training hours). The latest checkpoint can be deployed; "
                         "resume the job to go on training (billing continues with no further limit).",
                         {"billing_cap": True, "step": step - 1, "total_steps": t.steps}))
        metrics = ({"train_reward_mean": step / (t.steps + 1), "valid_reward_mean": step / (t.steps + 2)} if rft else
                   {"train_loss": 2.0 / (1 + step), "valid_loss": 2.2 / (1 + step)})
        first = next(iter(metrics.items()))
        plan.append((at, "running", f"Step {step}/{t.steps}: {first[0]}={first[1]:.4f}",
                     {"step": step, "total_steps": t.steps, **metrics}))
    plan.append((start + t.running_s + pause_s, "succeeded", "Training succeeded.", {}))
    return plan


def _checkpoint(job: dict[str, Any], at: float, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"object": "fine_tuning.job.checkpoint", "id": f"ftchkpt-{_hex()}", "created_at": int(at),
            "fine_tuning_job_id": job["id"], "step_number": step,
            "metrics": {"step": step, **{k: v for k, v in metrics.items() if k.endswith(("_loss", "_mean"))}},
            "fine_tuned_model_checkpoint": f"{job['model']}.ft-{job['id'][6:]}:ckpt-step-{step}"}


def advance(store: "Store", job: dict[str, Any]) -> None:
    """Replay the job's timeline up to now: status changes, events, checkpoints, the model. A job
    paused by its user stands still (its timeline is shifted by the time it was paused)."""
    if job["status"] in TERMINAL or job.get("user_paused_at") is not None:
        return
    t = store.timeline
    start = job["created_at"] + job.get("shift", 0.0)
    for offset, status, message, data in _plan(store, job)[job["applied"]:]:
        if start + offset > store.now:
            break
        job["applied"] += 1
        job["status"] = status
        job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{_hex()}", "created_at": int(start + offset),
                              "level": "error" if status == "failed" else "info", "message": message,
                              "type": "metrics" if data else "message", "data": data or None})
        if data.get("billing_cap"):
            job["checkpoints"].append(_checkpoint(job, start + offset, data["step"], {}))
            job["user_paused_at"] = start + offset  # held until its user resumes it (or cancels)
            job["cap_paused"] = True
            break
        if data and data["step"] > t.steps - 3:
            # the docs: the last three epochs stay deployable as checkpoints
            job["checkpoints"].append(_checkpoint(job, start + offset, data["step"], data))
        if status == "failed":
            job["error"] = {"code": "invalidTrainingFile", "message": message, "param": "training_file"}
            job["finished_at"] = int(start + offset)
        if status == "succeeded":
            model = f"{job['model']}.ft-{job['id'][6:]}" + (f"-{job['suffix']}" if job.get("suffix") else "")
            job.update(fine_tuned_model=model, finished_at=int(start + offset), trained_tokens=job["tokens"] * 3)
            store.ft_models[model] = {"account": job["account"], "job_id": job["id"], "created_at": int(store.now),
                                          "base": job["model"]}


def job_json(store: "Store", job: dict[str, Any], version: str) -> dict[str, Any]:
    advance(store, job)
    status = store.forced_status.get(job["id"], job["status"])
    if job.get("user_paused_at") is not None:
        status = "paused"
    keys = ("id", "model", "created_at", "finished_at", "fine_tuned_model", "training_file", "validation_file",
            "hyperparameters", "trained_tokens", "suffix", "seed", "error")
    out = {key: job.get(key) for key in keys}
    out.update(object="fine_tuning.job", status=status, organization_id=None, result_files=[], estimated_finish=None,
               integrations=None)
    if has_job_features(version):
        out.update(metadata=job.get("metadata"), method=job.get("method"), trainingType=job.get("training_type"))
    elif status in PAUSE_STATES:
        out["status"] = "running"  # the 2024-10-21 schema has no pause states
    return out


def _emulated_reward(grader: dict[str, Any], sample: str, item: dict[str, Any]) -> float | None:
    """The text graders' reward, computed as documented; None for python and model graders (not run here)."""
    import difflib
    import re

    def fill(template: str) -> str:
        def one(match: "re.Match[str]") -> str:
            namespace, _, path = match.group(1).strip().partition(".")
            value: Any = {"output_text": sample} if namespace == "sample" else item
            for part in path.split("."):
                value = value.get(part, "") if isinstance(value, dict) else ""
            return str(value)
        return re.sub(r"\{\{\s*([^}]*?)\s*\}\}", one, template)

    kind = grader.get("type")
    if kind == "string_check":
        left, right, op = fill(grader["input"]), fill(grader["reference"]), grader["operation"]
        return float({"eq": left == right, "ne": left != right, "like": right in left,
                      "ilike": right.lower() in left.lower()}[op])
    if kind == "text_similarity" and grader.get("evaluation_metric") == "fuzzy_match":
        return difflib.SequenceMatcher(None, fill(grader["input"]), fill(grader["reference"])).ratio()
    if kind == "multi":
        scores = {key: _emulated_reward(inner, sample, item) for key, inner in grader["graders"].items()}
        if any(v is None for v in scores.values()):
            return None
        import math

        names = {**scores, **{f: getattr(math, f, None) or {"abs": abs, "min": min, "max": max}[f]
                              for f in azure_rft.MULTI_FUNCTIONS}}
        return float(eval(grader["calculate_output"].replace("^", "**"), {"__builtins__": {}}, names))  # noqa: S307
    return None


def register(router: Router, store: "Store", account_of: Callable[[Request], str],
             page: Callable[[list[dict[str, Any]], Request], Response]) -> None:  # noqa: C901 - a route table
    """Fine-tuning job and grader routes over ``store``; ``account_of`` names the request's resource (404
    for an unknown one) and ``page`` answers a list the way the data plane pages it."""

    def job_of(request: Request) -> dict[str, Any]:
        job = store.ft_jobs.get(request.params["job_id"])
        if job is None or job.get("deleted"):
            raise err(404, "NotFound", f"Fine-tuning job {request.params['job_id']} not found.")
        return job

    def create_job(request: Request) -> Response:
        account = account_of(request)
        version = api_version(request)
        body = request.json()
        if not has_job_features(version):
            for field in ("trainingType", "method", "metadata"):
                if field in body:
                    raise err(400, "invalidPayload", f"Unrecognized request argument supplied: {field} "
                              f"(api-version {version}).", field)
        model = str(body.get("model") or "")
        training_type = rules.canonical_training_type(body.get("trainingType") or "Standard")  # none: regional
        found = store.account(account)
        region = found["region"]
        training = store.files.get(body.get("training_file") or "")
        vision = training is not None and b'"image_url"' in training["content"]
        if (rules.base_model(model) is None or training_type is None
                or rules.training_refusal(model, training_type, region, vision=vision) is not None):
            # the service's own wording, misleading as it is
            raise err(400, "invalidPayload", f"The specified base model does not support fine-tuning: {model}", "model")
        row = rules.base_model(model)
        if row is not None and row.open_weight and found.get("kind") != "AIServices":
            raise err(400, "invalidPayload", f"{model} can be fine-tuned only on a Foundry resource; {account} is an "
                      "Azure OpenAI resource.", "model")
        method = body.get("method") or {"type": "supervised"}
        method_type = str(method.get("type") or "supervised")
        refused = rules.method_refusal(model, method_type)
        if refused is not None:
            raise err(400, "invalidPayload", f"Fine-tuning method '{method_type}' is not supported for model {model}: "
                      f"{refused}.", "method")
        if training is None:
            raise err(400, "invalidPayload", f"Training file {body.get('training_file')} not found.", "training_file")
        if body.get("validation_file") and body["validation_file"] not in store.files:
            raise err(400, "invalidPayload", f"Validation file {body['validation_file']} not found.", "validation_file")
        grader = None
        if method_type == "reinforcement":
            rft = method.get("reinforcement") or {}
            grader = rft.get("grader")
            problems = azure_rft.grader_problems(grader) + azure_rft.hyperparameter_problems(rft.get("hyperparameters") or {})
            if not body.get("validation_file"):
                problems.append("reinforcement fine-tuning requires a validation file")
            if problems:
                raise err(400, "invalidPayload", "Invalid reinforcement fine-tuning request: " + "; ".join(problems),
                          "method")
        hyper = (method.get(method_type) or {}).get("hyperparameters") or body.get("hyperparameters") or {}
        job_id = f"ftjob-{_hex()}"
        job = {"id": job_id, "model": model, "created_at": int(store.now), "finished_at": None, "fine_tuned_model": None,
               "training_file": training["id"], "validation_file": body.get("validation_file"),
               "hyperparameters": {"n_epochs": hyper.get("n_epochs", -1), "batch_size": hyper.get("batch_size", -1),
                                   "learning_rate_multiplier": hyper.get("learning_rate_multiplier", 1)},
               "trained_tokens": None, "suffix": body.get("suffix"), "seed": body.get("seed", 42), "error": None,
               "metadata": body.get("metadata"), "method": body.get("method") or {"type": "supervised"},
               "training_type": training_type, "status": "pending", "applied": 0, "events": [], "checkpoints": [],
               "account": account, "problem": (_validate_rft(training["content"], grader) if grader is not None
                                                else _validate_jsonl(training["content"])),
               "tokens": max(len(training["content"]) // 4, 1)}
        store.ft_jobs[job_id] = job
        return Response.json(job_json(store, job, version), 201)

    def get_job(request: Request) -> Response:
        return Response.json(job_json(store, job_of(request), api_version(request)))

    def list_jobs(request: Request) -> Response:
        version = api_version(request)
        jobs = sorted((j for j in store.ft_jobs.values() if not j.get("deleted")),
                      key=lambda j: (j["created_at"], j["id"]), reverse=True)
        for key, values in request.query.items():
            if key.startswith("metadata[") and key.endswith("]") and has_job_features(version):
                jobs = [j for j in jobs if (j.get("metadata") or {}).get(key[9:-1]) == values[-1]]
        return page([job_json(store, j, version) for j in jobs], request)

    def cancel_job(request: Request) -> Response:
        job = job_of(request)
        advance(store, job)
        if job["status"] not in TERMINAL:
            job.update(status="cancelled", finished_at=int(store.now), user_paused_at=None)
            job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{_hex()}", "created_at": int(store.now),
                                  "level": "info", "message": "Job cancelled.", "type": "message", "data": None})
        store.forced_status.pop(job["id"], None)
        return Response.json(job_json(store, job, api_version(request)))

    def pause_job(request: Request) -> Response:
        version = api_version(request)
        if not has_job_features(version):
            raise err(404, "404", "Resource not found")
        job = job_of(request)
        advance(store, job)
        if job["status"] != "running" or job.get("user_paused_at") is not None:
            raise err(400, "invalidState", f"Only a running job can be paused; job is {job['status']}.")
        job["user_paused_at"] = store.now
        return Response.json(job_json(store, job, version))

    def resume_job(request: Request) -> Response:
        version = api_version(request)
        if not has_job_features(version):
            raise err(404, "404", "Resource not found")
        job = job_of(request)
        if job.get("user_paused_at") is None:
            raise err(400, "invalidState", "Only a job paused by its user can be resumed.")
        job["shift"] = job.get("shift", 0.0) + store.now - job.pop("user_paused_at")
        job["user_paused_at"] = None
        if job.pop("cap_paused", False):  # paused by the service at the RFT billing cap: training goes on
            job["status"] = "running"
            job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{_hex()}",
                                  "created_at": int(store.now), "level": "info", "type": "message", "data": None,
                                  "message": "Job resumed past the billing cap: billing continues with no further limit."})
        return Response.json(job_json(store, job, version))

    def delete_job(request: Request) -> Response:
        """Dated versions only (documented in 2024-10-21; not on v1): deletes the job's model."""
        if api_version(request) in ("v1", "preview"):
            raise err(405, "405", "Method not allowed")
        from cloudtune.emulators.azure._arm_cs import deployments_of

        job = job_of(request)
        advance(store, job)
        served = [job.get("fine_tuned_model"), *(c["id"] for c in job["checkpoints"])]
        serving = [name for model in served if model for name in deployments_of(store, job["account"], model)]
        if serving:
            raise err(409, "Conflict", f"The fine-tuned model of {job['id']} cannot be deleted because it has active "
                      f"deployments ({', '.join(serving)}). Delete the deployments first.")
        job["deleted"] = True
        if job.get("fine_tuned_model") in store.ft_models:
            store.ft_models[job["fine_tuned_model"]]["deleted"] = True
        return Response(204)

    def events(request: Request) -> Response:
        job = job_of(request)
        advance(store, job)
        return page(list(reversed(job["events"])), request)  # newest first, like the service

    def checkpoints(request: Request) -> Response:
        job = job_of(request)
        advance(store, job)
        return page(list(reversed(job["checkpoints"])), request)

    def validate_grader(request: Request) -> Response:
        grader = request.json().get("grader")
        problems = azure_rft.grader_problems(grader)
        if problems:
            raise err(400, "invalidPayload", "Invalid grader: " + "; ".join(problems), "grader")
        return Response.json({"grader": grader})

    def run_grader(request: Request) -> Response:
        body = request.json()
        grader = body.get("grader")
        problems = azure_rft.grader_problems(grader)
        if problems:
            raise err(400, "invalidPayload", "Invalid grader: " + "; ".join(problems), "grader")
        if "model_sample" not in body:
            raise err(400, "invalidPayload", "model_sample is required.", "model_sample")
        reward = _emulated_reward(grader, str(body["model_sample"]), body.get("item") or {})
        errors_ = {k: False for k in ("formula_parse_error", "sample_parse_error", "truncated_observation_error",
                                      "unresponsive_reward_error", "invalid_variable_error", "other_error",
                                      "python_grader_server_error", "python_grader_runtime_error",
                                      "model_grader_server_error", "model_grader_refusal_error", "model_grader_parse_error")}
        if reward is None:  # python and model graders are not executed by the emulator
            errors_["other_error"] = True
        return Response.json({"reward": reward or 0.0, "sub_rewards": {}, "model_grader_token_usage_per_model": {},
                              "metadata": {"name": grader.get("name"), "type": grader.get("type"), "errors": errors_,
                                           "execution_time": 0.0, "scores": {}, "token_usage": None,
                                           "sampled_model_name": None}})

    router.add("POST", "/openai/v1/fine_tuning/alpha/graders/validate", validate_grader)
    router.add("POST", "/openai/v1/fine_tuning/alpha/graders/run", run_grader)
    for prefix in ("/openai", "/openai/v1"):
        router.add("POST", f"{prefix}/fine_tuning/jobs", create_job)
        router.add("GET", f"{prefix}/fine_tuning/jobs", list_jobs)
        router.add("GET", f"{prefix}/fine_tuning/jobs/{{job_id}}", get_job)
        router.add("DELETE", f"{prefix}/fine_tuning/jobs/{{job_id}}", delete_job)
        router.add("POST", f"{prefix}/fine_tuning/jobs/{{job_id}}/cancel", cancel_job)
        router.add("POST", f"{prefix}/fine_tuning/jobs/{{job_id}}/pause", pause_job)
        router.add("POST", f"{prefix}/fine_tuning/jobs/{{job_id}}/resume", resume_job)
        router.add("GET", f"{prefix}/fine_tuning/jobs/{{job_id}}/events", events)
        router.add("GET", f"{prefix}/fine_tuning/jobs/{{job_id}}/checkpoints", checkpoints)
