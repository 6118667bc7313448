"""ARM routes of a Foundry project that run things: fine-tuning jobs, serverless endpoints,
marketplace subscriptions and the long-running-operation status URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import Request, Response, Router
from cloudtune.emulators.azure._arm_ml import (
    WS,
    _operation,
    _resource,
    endpoint_state,
    job_status,
    purge,
)
from cloudtune.emulators.azure._state import arm_error, family_of, new_key, start_delete
from cloudtune.service_facts import azure_serverless

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store

OPS = "/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{region}"


def _base_model_of(body: dict[str, Any]) -> str:
    details = body.get("properties", {}).get("fineTuningDetails") or {}
    model = details.get("model") or {}
    return str(model.get("uri") or model.get("path") or "")


def register(router: Router, store: "Store") -> None:  # noqa: C901 - a route table
    """ARM routes of fine-tuning jobs, serverless endpoints, marketplace subscriptions and operations, over ``store``."""

    def found(table: dict[tuple[str, str], dict[str, Any]], request: Request, what: str) -> dict[str, Any]:
        """The workspace's resource the request names, or ARM's 404 naming it."""
        item = table.get((request.params["ws"], request.params["name"]))
        if item is None:
            raise arm_error(404, "UserError", f"{what} {request.params['name']} not found.")
        return item

    # ----------------------------------------------------------------- jobs
    def job_body(request: Request, job: dict[str, Any]) -> dict[str, Any]:
        status = job_status(store, request.params["ws"], job)
        out = _resource(request, "jobs", job["name"], job["body"], job["created"])
        out["properties"]["status"] = status
        return out

    def put_job(request: Request) -> Response:
        ws_name, name = request.params["ws"], request.params["name"]
        ws = store.workspace(ws_name)
        body = request.json()
        if (ws_name, name) in store.ml_jobs:
            raise arm_error(409, "UserError", f"A job with name {name} already exists.")
        props = body.get("properties", {})
        if props.get("jobType") == "FineTuning":
            base_model = _base_model_of(body)
            if ws["kind"] != "Project":
                raise arm_error(400, "UserError", "Serverless fine-tuning needs a hub-based Azure AI Foundry project; "
                                f"workspace '{ws_name}' is not one.")
            if "/versions/" not in base_model:  # how-to/fine-tune-serverless.md: the versioned registry id
                raise arm_error(400, "UserError", f"The model to fine-tune must be a versioned registry asset "
                                f"(azureml://registries/<registry>/models/<name>/versions/<n>), not {base_model}.")
            refusal = azure_serverless.refusal(base_model, ws["region"])  # retired, not fine-tunable, region
            if refusal is not None:
                code = "ModelRetired" if azure_serverless.retirement(base_model) else "UserError"
                raise arm_error(400, code, f"Fine-tuning is not available: {refusal}.")
            if store.needs_marketplace(base_model) and not _subscribed(store, ws_name, base_model):
                raise arm_error(400, "MarketplaceSubscriptionMissing", f"Model {base_model} needs an Azure Marketplace "
                                "subscription in this project before it can be fine-tuned.")
            details = props.get("fineTuningDetails") or {}
            if not details.get("validationData"):
                raise arm_error(400, "UserError", "validation_data is required for this fine-tuning task.")
        else:
            base_model = ""
        props.setdefault("tags", {})
        props["status"] = "NotStarted"
        store.ml_jobs[(ws_name, name)] = {"name": name, "created": store.now, "body": body, "base_model": base_model}
        return Response.json(job_body(request, store.ml_jobs[(ws_name, name)]), 201)

    def get_job(request: Request) -> Response:
        return Response.json(job_body(request, found(store.ml_jobs, request, "Job")))

    def list_jobs(request: Request) -> Response:
        ws = request.params["ws"]
        jobs = sorted((j for (w, _), j in store.ml_jobs.items() if w == ws), key=lambda j: -j["created"])
        return Response.json({"value": [job_body(request, j) for j in jobs]})

    def cancel_job(request: Request) -> Response:
        job = found(store.ml_jobs, request, "Job")
        if job_status(store, request.params["ws"], job) not in ("Completed", "Failed", "Canceled"):
            job["final"] = "Canceled"
            store.forced_status.pop(job["name"], None)
        return Response(202, b"", _operation(store, request, "done", None))

    def delete_job(request: Request) -> Response:
        store.ml_jobs.pop((request.params["ws"], request.params["name"]), None)
        return Response(200)

    router.add("PUT", WS + "/jobs/{name}", put_job)
    router.add("GET", WS + "/jobs/{name}", get_job)
    router.add("DELETE", WS + "/jobs/{name}", delete_job)
    router.add("GET", WS + "/jobs", list_jobs)
    router.add("POST", WS + "/jobs/{name}/cancel", cancel_job)

    # ----------------------------------------------------- serverless endpoints
    def endpoint_body(request: Request, endpoint: dict[str, Any]) -> dict[str, Any]:
        out = _resource(request, "serverlessEndpoints", endpoint["name"], endpoint["body"], endpoint["created"])
        region = store.workspace(request.params["ws"])["region"]
        state = endpoint_state(store, endpoint)
        out["location"] = region
        out["properties"].update({
            "provisioningState": state,
            "endpointState": "Online" if state == "Succeeded" else state,
            "inferenceEndpoint": {"uri": f"https://{endpoint['name'].lower()}.{region}.models.ai.azure.com", "headers": {}},
        })
        out["properties"].setdefault("authMode", "Key")
        out.setdefault("sku", {"name": "Consumption"})
        return out

    def put_endpoint(request: Request) -> Response:
        ws_name, name = request.params["ws"], request.params["name"]
        store.workspace(ws_name)
        purge(store)
        body = request.json()
        existing = store.endpoints.get((ws_name, name))
        if existing is not None:
            if existing.get("deleting_at") is not None:
                raise arm_error(409, "Conflict", f"Serverless endpoint {name} is being deleted.")
            existing["body"]["properties"].update(body.get("properties", {}))
            return Response.json(endpoint_body(request, existing), 200)
        model_id = body.get("properties", {}).get("modelSettings", {}).get("modelId", "")
        model_key = _custom_model_key(model_id)
        taken = [n for (w, n), e in store.endpoints.items() if w == ws_name and model_key
                 and _custom_model_key(e["body"].get("properties", {}).get("modelSettings", {}).get("modelId", "")) == model_key]
        if taken:  # how-to/fine-tune-serverless.md: one serverless deployment per custom model
            raise arm_error(409, "Conflict", f"The custom model {model_key[0]}:{model_key[1]} already has a serverless "
                            f"deployment ({', '.join(taken)}); only one is allowed per custom model.")
        base = _model_base(store, ws_name, model_id)
        if store.needs_marketplace(base) and not _subscribed(store, ws_name, base):
            raise arm_error(400, "MarketplaceSubscriptionMissing",
                            f"Deploying {base} needs an Azure Marketplace subscription in this project.")
        if model_key and (ws_name, *model_key) not in store.models:
            raise arm_error(404, "UserError", f"Model {model_id} not found.")
        store.endpoints[(ws_name, name)] = {"name": name, "created": store.now, "body": body,
                                            "keys": {"primaryKey": new_key(), "secondaryKey": new_key()}}
        return Response.json(endpoint_body(request, store.endpoints[(ws_name, name)]), 201,
                             _operation(store, request, "endpoint", (ws_name, name)))

    def get_endpoint(request: Request) -> Response:
        purge(store)
        return Response.json(endpoint_body(request, found(store.endpoints, request, "Serverless endpoint")))

    def list_endpoints(request: Request) -> Response:
        purge(store)
        ws = request.params["ws"]
        return Response.json({"value": [endpoint_body(request, e) for (w, _), e in sorted(store.endpoints.items()) if w == ws]})

    def delete_endpoint(request: Request) -> Response:
        purge(store)
        key = (request.params["ws"], request.params["name"])
        if not start_delete(store.endpoints, key, store.now):
            return Response(204)
        return Response(202, b"", _operation(store, request, "endpoint-delete", key))

    def list_keys(request: Request) -> Response:
        return Response.json(found(store.endpoints, request, "Serverless endpoint")["keys"])

    router.add("PUT", WS + "/serverlessEndpoints/{name}", put_endpoint)
    router.add("GET", WS + "/serverlessEndpoints/{name}", get_endpoint)
    router.add("DELETE", WS + "/serverlessEndpoints/{name}", delete_endpoint)
    router.add("GET", WS + "/serverlessEndpoints", list_endpoints)
    router.add("POST", WS + "/serverlessEndpoints/{name}/listKeys", list_keys)

    # ---------------------------------------------------- marketplace subscriptions
    def put_subscription(request: Request) -> Response:
        ws_name, name = request.params["ws"], request.params["name"]
        store.workspace(ws_name)
        body = request.json()
        props = body.setdefault("properties", {})
        model = str(props.get("modelId", "")).rstrip("/").rsplit("/", 1)[-1].lower()
        props.update({"marketplaceSubscriptionStatus": "Subscribed", "provisioningState": "Succeeded",
                      "marketplacePlan": {"publisherId": "azureml-emulated", "offerId": f"{model}-offer",
                                          "planId": f"{model}-plan"}})
        store.marketplace[(ws_name, name)] = {"created": store.now, "body": body}
        return Response.json(_resource(request, "marketplaceSubscriptions", name, body, store.now), 201,
                             _operation(store, request, "done", None))

    def get_subscription(request: Request) -> Response:
        item = found(store.marketplace, request, "Marketplace subscription")
        return Response.json(_resource(request, "marketplaceSubscriptions", request.params["name"], item["body"],
                                       item["created"]))

    def delete_subscription(request: Request) -> Response:
        store.marketplace.pop((request.params["ws"], request.params["name"]), None)
        return Response(200)

    router.add("PUT", WS + "/marketplaceSubscriptions/{name}", put_subscription)
    router.add("GET", WS + "/marketplaceSubscriptions/{name}", get_subscription)
    router.add("DELETE", WS + "/marketplaceSubscriptions/{name}", delete_subscription)

    # ------------------------------------------------------------ operations
    def operation_of(request: Request) -> dict[str, Any]:
        op = store.operations.get(request.params["op"])
        if op is None:
            raise arm_error(404, "NotFound", "Operation not found")
        return op

    def operation_done(op: dict[str, Any]) -> bool:
        purge(store)
        if op["kind"] == "endpoint":
            endpoint = store.endpoints.get(op["key"])
            return endpoint is None or endpoint_state(store, endpoint) != "Creating"
        if op["kind"] == "endpoint-delete":
            return op["key"] not in store.endpoints
        return True

    def operation_status(request: Request) -> Response:
        status = "Succeeded" if operation_done(operation_of(request)) else "InProgress"
        return Response.json({"id": request.path, "name": request.params["op"], "status": status})

    def operation_result(request: Request) -> Response:
        if not operation_done(operation_of(request)):
            return Response(202, b"", {"Location": f"https://management.azure.com{request.path}?api-version="
                                                   f"{request.arg('api-version') or '2024-10-01'}", "Retry-After": "1"})
        return Response(200)

    router.add("GET", OPS + "/mfeOperationsStatus/{op}", operation_status)
    router.add("GET", OPS + "/mfeOperationResults/{op}", operation_result)


def _subscribed(store: "Store", ws: str, model: str) -> bool:
    family = family_of(model)
    return any(family_of(item["body"].get("properties", {}).get("modelId", "")) == family
               for (w, _), item in store.marketplace.items() if w == ws)


def _custom_model_key(model_id: str) -> tuple[str, str] | None:
    """(name, version) of a workspace model, from the documented
    ``azureml://locations/{loc}/workspaces/{workspace_id}/models/{name}/versions/{v}`` or an ARM id;
    None for a catalog (registry) model."""
    if "registries/" in model_id or "/models/" not in model_id:
        return None
    parts = model_id.rstrip("/").split("/models/", 1)[1].split("/")
    return parts[0], parts[-1]


def _model_base(store: "Store", ws: str, model_id: str) -> str:
    """A workspace model id -> the catalog model it was fine-tuned from (itself for catalog ids)."""
    if "registries/" in model_id:
        return model_id
    key = _custom_model_key(model_id)
    if key is not None:
        model = store.models.get((ws, *key))
        if model is not None:
            return model.get("base_model") or ""
    return model_id
