"""Model and chat routes of the OpenAI emulator (``/v1/models``, ``/v1/chat/completions``), over an
:class:`~cloudtune.emulators.openai.store.OpenAIStore`. Base models are the fine-tunable ones of the
dated model table; fine-tuned models and their checkpoints appear as their jobs succeed."""

from __future__ import annotations

from typing import Any

from cloudtune.emulators._http import HTTPError, Request, Response, Router
from cloudtune.emulators.openai.errors import error_document
from cloudtune.emulators.openai.jobs import new_id
from cloudtune.emulators.openai.store import OpenAIStore
from cloudtune.service_facts import openai_lifecycle as lifecycle

# Base models the emulator serves and fine-tunes (aliases resolve to the snapshot, as the service does).
BASE_MODEL_CREATED = 1_721_172_741


def checkpoint_model(store: OpenAIStore, model_id: str) -> dict[str, Any] | None:
    """A checkpoint's model id (``ft:...:ckpt-step-N``) is served like a model while its job's model
    exists (https://platform.openai.com/docs/guides/fine-tuning, checkpoints)."""
    if ":ckpt-step-" not in model_id:
        return None
    final = model_id.rsplit(":ckpt-step-", 1)[0]
    record = store.models.get(final)
    job = store.jobs.get(record["job_id"]) if record else None
    if job is None or not any(c["fine_tuned_model_checkpoint"] == model_id for c in job.checkpoints):
        return None
    return {**record, "id": model_id}


def model_json(store: OpenAIStore, model_id: str) -> dict[str, Any] | None:
    """The model object the service answers for ``model_id``; None when there is no such model."""
    checkpoint = checkpoint_model(store, model_id)
    if model_id in store.models or checkpoint is not None:
        found = {k: v for k, v in (checkpoint or store.models[model_id]).items() if k != "job_id"}
    elif model_id in store.fine_tunable:
        found = {"id": model_id, "object": "model", "created": BASE_MODEL_CREATED, "owned_by": "system"}
    else:
        return None
    shutdown = lifecycle.table_shutdown(model_id)  # fine-tunes go dark with their base
    if shutdown is not None:
        found["shutdown_date"] = shutdown.isoformat()
    return found


def learned_answers(store: OpenAIStore, model_id: str) -> dict[str, str]:
    """What a fine-tuned model "learned": last user message -> assistant reply of its training data."""
    record = store.models.get(model_id) or checkpoint_model(store, model_id)
    job = store.jobs.get(record["job_id"]) if record else None
    stored = store.files.get(job.training_file) if job else None
    if stored is None:
        return {}
    from cloudtune.emulators.openai.chat import learned_answers as from_training_data

    return from_training_data(stored.content)


def model_not_found(model_id: str) -> HTTPError:
    return HTTPError(404, error_document(f"The model '{model_id}' does not exist or you do not have access to it.",
                                 None, "model_not_found"))


def register(router: Router, store: OpenAIStore) -> None:
    """The model and chat routes, over ``store``."""

    def list_models(request: Request) -> Response:
        with store.lock:
            store.advance_jobs()
            ids = list(store.fine_tunable) + list(store.models)
            return Response.json({"object": "list", "data": [model_json(store, i) for i in ids]})

    def retrieve_model(request: Request) -> Response:
        model_id = request.params["model"]
        with store.lock:
            store.advance_jobs()
            found = model_json(store, model_id)
        if found is None:
            raise model_not_found(model_id)
        return Response.json(found)

    def delete_model(request: Request) -> Response:
        model_id = request.params["model"]
        with store.lock:
            if model_id in store.fine_tunable:
                raise HTTPError(403, error_document("You have insufficient permissions for this operation. "
                                            "Only models owned by your organization can be deleted.", None))
            if store.models.pop(model_id, None) is None:
                raise model_not_found(model_id)
        return Response.json({"id": model_id, "object": "model", "deleted": True})

    def chat_completion(request: Request) -> Response:
        body = request.json()
        model_id = body.get("model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, error_document("'messages' must be a non-empty list.", "messages"))
        with store.lock:
            store.chat_requests += 1
            if not isinstance(model_id, str) or model_json(store, model_id) is None:
                raise model_not_found(str(model_id))
            learned = learned_answers(store, model_id)
        from cloudtune.emulators.openai.chat import reply

        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        content, finish, prompt_tokens, completion_tokens = reply(model_id, messages, learned, limit)
        return Response.json({
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(store.clock.now()),
            "model": model_id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "service_tier": "default",
            "system_fingerprint": "fp_cloudtune_emulator",
        })

    router.add("GET", "/v1/models", list_models)
    router.add("GET", "/v1/models/{model}", retrieve_model)
    router.add("DELETE", "/v1/models/{model}", delete_model)
    router.add("POST", "/v1/chat/completions", chat_completion)
