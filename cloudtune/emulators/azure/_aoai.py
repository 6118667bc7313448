"""Azure OpenAI data plane (``https://<account>.openai.azure.com/openai/...``).

Close to OpenAI's API, with Azure's differences kept on purpose because they are
what the provider must cope with: statuses ``pending`` / ``notRunning``, null
fields (``finished_at``, ``fine_tuned_model``, ``estimated_finish``,
``trained_tokens``, ``organization_id``), deployment-scoped chat
(``/openai/deployments/{name}/chat/completions``), and the refusal (409) to
delete a fine-tuned model that still has a deployment (a ``Deleting`` one
included).
"""

from __future__ import annotations

import json
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.emulators.azure._arm_cs import deployment_state, deployments_of, purge
from cloudtune.emulators.azure._hosts import chat_completion

if TYPE_CHECKING:
    from cloudtune.emulators.azure._app import AzureEmulatorApp

FINE_TUNABLE = ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4o", "gpt-4.1-2025-04-14", "gpt-4.1",
                "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano",
                "gpt-35-turbo-0125", "gpt-35-turbo-1106")
TERMINAL = ("succeeded", "failed", "cancelled")


def _err(status: int, code: str, message: str, param: str | None = None) -> HTTPError:
    return HTTPError(status, {"error": {"code": code, "message": message, "param": param, "type": None}})


def _hex() -> str:
    return uuid.uuid4().hex


def _validate_jsonl(content: bytes) -> tuple[int, str] | None:
    """(line, problem) for the first example the service would refuse, else None."""
    lines = [line for line in content.decode("utf-8", "replace").splitlines() if line.strip()]
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


def advance(app: "AzureEmulatorApp", job: dict[str, Any]) -> None:
    """Replay the job's timeline up to now: status changes, events, checkpoints, the model."""
    if job["status"] in TERMINAL:
        return
    t = app.store.timeline
    start = job["created_at"]
    now = app.now
    plan: list[tuple[float, str, str, dict[str, Any]]] = [
        (0.0, "pending", "Job enqueued. Validating training file.", {}),
    ]
    if job["problem"] is not None:
        plan.append((t.validating_s, "failed", f"Training file validation failed at line {job['problem'][0]}: "
                     f"{job['problem'][1]}", {}))
    else:
        plan.append((t.validating_s, "notRunning", "Training file validated. Waiting for capacity.", {}))
        plan.append((t.validating_s + t.queued_s, "running", "Training started.", {}))
        for step in range(1, t.steps + 1):
            plan.append((t.validating_s + t.queued_s + t.running_s * step / (t.steps + 1), "running",
                         f"Step {step}/{t.steps}: training loss={2.0 / (1 + step):.4f}",
                         {"step": step, "total_steps": t.steps, "train_loss": 2.0 / (1 + step),
                          "valid_loss": 2.2 / (1 + step)}))
        plan.append((t.validating_s + t.queued_s + t.running_s, "succeeded", "Training succeeded.", {}))
    for offset, status, message, data in plan[job["applied"]:]:
        if start + offset > now:
            break
        job["applied"] += 1
        job["status"] = status
        job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{_hex()}", "created_at": int(start + offset),
                              "level": "error" if status == "failed" else "info", "message": message,
                              "type": "metrics" if data else "message", "data": data or None})
        if data and data["step"] == t.steps:
            job["checkpoints"].append({"object": "fine_tuning.job.checkpoint", "id": f"ftchkpt-{_hex()}",
                                       "created_at": int(start + offset), "fine_tuning_job_id": job["id"],
                                       "step_number": data["step"], "metrics": {"step": data["step"],
                                                                                "train_loss": data["train_loss"]},
                                       "fine_tuned_model_checkpoint": f"{job['model']}.ft-{job['id'][6:]}:ckpt-step-{data['step']}"})
        if status == "failed":
            job["error"] = {"code": "invalidTrainingFile", "message": message, "param": "training_file"}
            job["finished_at"] = int(start + offset)
        if status == "succeeded":
            model = f"{job['model']}.ft-{job['id'][6:]}" + (f"-{job['suffix']}" if job.get("suffix") else "")
            job.update(fine_tuned_model=model, finished_at=int(start + offset), trained_tokens=job["tokens"] * 3)
            app.store.ft_models[model] = {"account": job["account"], "job_id": job["id"], "created_at": int(now)}


def job_json(app: "AzureEmulatorApp", job: dict[str, Any]) -> dict[str, Any]:
    advance(app, job)
    status = app.store.forced_status.get(job["id"], job["status"])
    keys = ("id", "model", "created_at", "finished_at", "fine_tuned_model", "training_file", "validation_file",
            "hyperparameters", "trained_tokens", "suffix", "seed", "error", "metadata", "method")
    out = {key: job.get(key) for key in keys}
    out.update(object="fine_tuning.job", status=status, organization_id=None, result_files=[], estimated_finish=None,
               integrations=None)
    return out


def register(app: "AzureEmulatorApp", router: Router) -> None:  # noqa: C901 - a route table
    store = app.store

    def account_of(request: Request) -> str:
        account = request.params["__label"]
        if account not in store.accounts:
            raise _err(404, "ResourceNotFound", f"Azure OpenAI resource {account} not found.")
        return account

    # ------------------------------------------------------------------ files
    def file_json(item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in ("id", "object", "bytes", "created_at", "filename", "purpose", "status")} | {
            "status_details": None}

    def create_file(request: Request) -> Response:
        account = account_of(request)
        ctype = request.headers.get("content-type", "")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.body)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields or fields.get("purpose", (None, b""))[1].decode() != "fine-tune":
            raise _err(400, "invalidPayload", "A 'file' part and purpose 'fine-tune' are required.")
        filename, content = fields["file"]
        file_id = f"file-{_hex()}"
        store.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(app.now),
                                "filename": filename or "upload.jsonl", "purpose": "fine-tune", "status": "processed",
                                "content": content, "account": account}
        return Response.json(file_json(store.files[file_id]), 201)

    def get_file(request: Request) -> Response:
        item = store.files.get(request.params["file_id"])
        if item is None:
            raise _err(404, "fileNotFound", f"File {request.params['file_id']} not found.")
        return Response.json(file_json(item))

    def delete_file(request: Request) -> Response:
        if store.files.pop(request.params["file_id"], None) is None:
            raise _err(404, "fileNotFound", f"File {request.params['file_id']} not found.")
        return Response.json({"id": request.params["file_id"], "object": "file", "deleted": True})

    def list_files(request: Request) -> Response:
        return Response.json({"object": "list", "data": [file_json(f) for f in store.files.values()]})

    router.add("POST", "/openai/files", create_file)
    router.add("GET", "/openai/files", list_files)
    router.add("GET", "/openai/files/{file_id}", get_file)
    router.add("DELETE", "/openai/files/{file_id}", delete_file)

    # ------------------------------------------------------------------- jobs
    def create_job(request: Request) -> Response:
        account = account_of(request)
        body = request.json()
        model = body.get("model")
        if model not in FINE_TUNABLE:
            raise _err(400, "invalidPayload", f"The specified base model does not support fine-tuning: {model}", "model")
        training = store.files.get(body.get("training_file") or "")
        if training is None:
            raise _err(400, "invalidPayload", f"Training file {body.get('training_file')} not found.", "training_file")
        if body.get("validation_file") and body["validation_file"] not in store.files:
            raise _err(400, "invalidPayload", f"Validation file {body['validation_file']} not found.", "validation_file")
        hyper = (body.get("method") or {}).get("supervised", {}).get("hyperparameters") or body.get("hyperparameters") or {}
        job_id = f"ftjob-{_hex()}"
        job = {"id": job_id, "model": model, "created_at": int(app.now), "finished_at": None, "fine_tuned_model": None,
               "training_file": training["id"], "validation_file": body.get("validation_file"),
               "hyperparameters": {"n_epochs": hyper.get("n_epochs", -1), "batch_size": hyper.get("batch_size", -1),
                                   "learning_rate_multiplier": hyper.get("learning_rate_multiplier", 1)},
               "trained_tokens": None, "suffix": body.get("suffix"), "seed": body.get("seed", 42), "error": None,
               "metadata": body.get("metadata"), "method": body.get("method") or {"type": "supervised"},
               "status": "pending", "applied": 0, "events": [], "checkpoints": [], "account": account,
               "problem": _validate_jsonl(training["content"]), "tokens": max(len(training["content"]) // 4, 1)}
        store.ft_jobs[job_id] = job
        return Response.json(job_json(app, job), 201)

    def get_job(request: Request) -> Response:
        job = store.ft_jobs.get(request.params["job_id"])
        if job is None:
            raise _err(404, "NotFound", f"Fine-tuning job {request.params['job_id']} not found.")
        return Response.json(job_json(app, job))

    def list_jobs(request: Request) -> Response:
        jobs = sorted(store.ft_jobs.values(), key=lambda j: (j["created_at"], j["id"]), reverse=True)
        for key, values in request.query.items():
            if key.startswith("metadata[") and key.endswith("]"):
                jobs = [j for j in jobs if (j.get("metadata") or {}).get(key[9:-1]) == values[-1]]
        return _page([job_json(app, j) for j in jobs], request)

    def cancel_job(request: Request) -> Response:
        job = store.ft_jobs.get(request.params["job_id"])
        if job is None:
            raise _err(404, "NotFound", f"Fine-tuning job {request.params['job_id']} not found.")
        advance(app, job)
        if job["status"] not in TERMINAL:
            job.update(status="cancelled", finished_at=int(app.now))
            job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{_hex()}", "created_at": int(app.now),
                                  "level": "info", "message": "Job cancelled.", "type": "message", "data": None})
        store.forced_status.pop(job["id"], None)
        return Response.json(job_json(app, job))

    def events(request: Request) -> Response:
        job = store.ft_jobs.get(request.params["job_id"])
        if job is None:
            raise _err(404, "NotFound", f"Fine-tuning job {request.params['job_id']} not found.")
        advance(app, job)
        return _page(list(reversed(job["events"])), request)  # newest first, like the service

    def checkpoints(request: Request) -> Response:
        job = store.ft_jobs.get(request.params["job_id"])
        if job is None:
            raise _err(404, "NotFound", f"Fine-tuning job {request.params['job_id']} not found.")
        advance(app, job)
        return _page(list(reversed(job["checkpoints"])), request)

    router.add("POST", "/openai/fine_tuning/jobs", create_job)
    router.add("GET", "/openai/fine_tuning/jobs", list_jobs)
    router.add("GET", "/openai/fine_tuning/jobs/{job_id}", get_job)
    router.add("POST", "/openai/fine_tuning/jobs/{job_id}/cancel", cancel_job)
    router.add("GET", "/openai/fine_tuning/jobs/{job_id}/events", events)
    router.add("GET", "/openai/fine_tuning/jobs/{job_id}/checkpoints", checkpoints)

    # ----------------------------------------------------------------- models
    def live_model(model: str) -> dict[str, Any]:
        item = store.ft_models.get(model)
        if item is None or item.get("deleted"):
            raise _err(404, "NotFound", f"The model '{model}' does not exist.")
        return item

    def get_model(request: Request) -> Response:
        item = live_model(request.params["model"])
        return Response.json({"id": request.params["model"], "object": "model", "created_at": item["created_at"],
                              "status": "succeeded", "fine_tune": item["job_id"],
                              "capabilities": {"fine_tune": False, "inference": True, "chat_completion": True}})

    def delete_model(request: Request) -> Response:
        model = request.params["model"]
        item = live_model(model)
        serving = deployments_of(app, item["account"], model)
        if serving:
            raise _err(409, "Conflict", f"The model '{model}' cannot be deleted because it has active deployments "
                       f"({', '.join(serving)}). Delete the deployments first.")
        item["deleted"] = True
        return Response.json({"id": model, "object": "model", "deleted": True})

    router.add("GET", "/openai/models/{model}", get_model)
    router.add("DELETE", "/openai/models/{model}", delete_model)

    # ------------------------------------------------------------------- chat
    def chat(request: Request) -> Response:
        account = account_of(request)
        purge(app)
        dep = store.cs_deployments.get((account, request.params["deployment"]))
        if dep is None or deployment_state(app, dep) != "Succeeded":
            raise _err(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created "
                       "the deployment within the last 5 minutes, please wait a moment and try again.")
        body = request.json()
        return Response.json(chat_completion(dep["model"], body.get("messages") or []))

    router.add("POST", "/openai/deployments/{deployment}/chat/completions", chat)


def _page(items: list[dict[str, Any]], request: Request) -> Response:
    after = request.arg("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(request.arg("limit") or 20)
    return Response.json({"object": "list", "data": items[:limit], "has_more": len(items) > limit})
