"""Azure Resource Manager: Microsoft.MachineLearningServices (hub-based Foundry projects).

Serves what ``azure-ai-ml`` calls for a serverless fine-tuning run: workspace
get, datastores + ``listSecrets``, data versions, jobs (+ cancel), model
versions, serverless endpoints (long-running create/delete with
``Azure-AsyncOperation`` polling, ``listKeys``), marketplace subscriptions.
"""

from __future__ import annotations

import uuid

import copy
from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import Request, Response, Router
from cloudtune.emulators.azure._state import arm_error, family_of, new_id, new_key, provisioning_state, purge_deleted

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store

WS = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
ML_TYPE = "Microsoft.MachineLearningServices/workspaces"

# job statuses in the order a healthy job walks through them
_JOB_TERMINAL = ("Completed", "Failed", "Canceled")


def _sys(created: float) -> dict[str, Any]:
    from datetime import datetime, timezone

    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"createdAt": stamp, "createdBy": "cloudtune-emulator", "createdByType": "Application",
            "lastModifiedAt": stamp}


def _ws_id(request: Request) -> str:
    p = request.params
    return f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/{ML_TYPE}/{p['ws']}"


def _resource(request: Request, kind: str, name: str, body: dict[str, Any], created: float) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out.update({"id": f"{_ws_id(request)}/{kind}/{name}", "name": name, "type": f"{ML_TYPE}/{kind}",
                "systemData": _sys(created)})
    out.setdefault("properties", {})
    return out


def _operation(store: "Store", request: Request, kind: str, key: Any) -> dict[str, str]:
    op_id = store.add_operation(kind, key)
    region = store.workspace(request.params["ws"])["region"]
    base = f"https://management.azure.com/subscriptions/{request.params['sub']}/providers/Microsoft.MachineLearningServices/locations/{region}"
    version = request.arg("api-version") or "2024-10-01"
    return {"Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op_id}?api-version={version}",
            "Location": f"{base}/mfeOperationResults/{op_id}?api-version={version}"}


# -------------------------------------------------------------------- state helpers


def purge(store: "Store") -> None:
    """Finish deletes whose time has come (endpoints go away after ``delete_s``)."""
    purge_deleted(store.endpoints, store.now, store.timeline.delete_s)


def endpoint_state(store: "Store", endpoint: dict[str, Any]) -> str:
    return provisioning_state(endpoint, store.now, endpoint["created"] + store.timeline.deploy_s)


def job_status(store: "Store", ws: str, job: dict[str, Any]) -> str:
    forced = store.forced_status.get(job["name"])
    if forced is not None:
        return forced
    if job.get("final"):
        return job["final"]
    t = store.timeline
    elapsed = store.now - job["created"]
    if elapsed < t.validating_s:
        return "NotStarted"
    if elapsed < t.validating_s + t.queued_s:
        return "Queued"
    if elapsed < t.validating_s + t.queued_s + t.running_s:
        return "Running"
    job["final"] = "Completed"
    _register_output_model(store, ws, job)
    return "Completed"


def _register_output_model(store: "Store", ws: str, job: dict[str, Any]) -> None:
    output = job["body"]["properties"].get("outputs", {}).get("registered_model") or {}
    name = output.get("assetName") or f"{job['name']}-model"
    versions = [int(v) for (w, n, v) in store.models if w == ws and n == name and v.isdigit()]
    version = str(max(versions, default=0) + 1)
    base_model = job["base_model"]
    store.models[(ws, name, version)] = {
        "created": store.now,
        "body": {"properties": {"modelType": "custom_model", "description": f"fine-tuned from {base_model}",
                                "tags": {"baseModel": base_model, "sourceJob": job["name"]},
                                "properties": {"baseModel": base_model}, "flavors": {}, "isArchived": False,
                                "modelUri": f"azureml://jobs/{job['name']}/outputs/registered_model"}},
        "base_model": base_model,
    }
    output.update({"assetName": name, "assetVersion": version,
                   "uri": f"azureml://locations/x/workspaces/{ws}/models/{name}/versions/{version}"})


def register(router: Router, store: "Store") -> None:  # noqa: C901 - a route table
    """ARM routes of a workspace's own resources (workspace, datastores, data and model versions), over
    ``store``; what runs (jobs, endpoints) is :func:`cloudtune.emulators.azure._arm_ml_jobs.register`."""

    # ------------------------------------------------------------ workspaces
    def get_workspace(request: Request) -> Response:
        name = request.params["ws"]
        ws = store.workspace(name)
        props: dict[str, Any] = {
            "friendlyName": name, "storageAccount": f"/subscriptions/{request.params['sub']}/resourceGroups/"
            f"{request.params['rg']}/providers/Microsoft.Storage/storageAccounts/{store.seed.storage_account}",
            "discoveryUrl": f"https://{ws['region']}.api.azureml.ms/discovery", "workspaceId": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "mlFlowTrackingUri": f"azureml://{ws['region']}.api.azureml.ms/mlflow/v1.0{_ws_id(request)}",
            "provisioningState": "Succeeded", "publicNetworkAccess": "Enabled"}
        if ws["kind"] == "Project":
            props["hubResourceId"] = f"/subscriptions/{request.params['sub']}/resourceGroups/{request.params['rg']}/providers/{ML_TYPE}/{store.seed.hub}"
        body = {"id": _ws_id(request), "name": name, "type": ML_TYPE, "location": ws["region"], "kind": ws["kind"],
                "identity": {"type": "SystemAssigned"}, "sku": {"name": "Basic", "tier": "Basic"}, "properties": props,
                "tags": {}}
        return Response.json(body)

    router.add("GET", WS, get_workspace)

    # ------------------------------------------------------------ datastores
    def datastore_body(request: Request, name: str) -> dict[str, Any]:
        return _resource(request, "datastores", name, {"properties": {
            "datastoreType": "AzureBlob", "accountName": store.seed.storage_account, "containerName": store.container,
            "endpoint": "core.windows.net", "protocol": "https", "isDefault": name == "workspaceblobstore",
            "credentials": {"credentialsType": "AccountKey"}, "serviceDataAccessAuthIdentity": "None",
            "tags": {}, "properties": {}}}, 0.0)

    def list_datastores(request: Request) -> Response:
        store.workspace(request.params["ws"])
        return Response.json({"value": [datastore_body(request, "workspaceblobstore")]})

    def get_datastore(request: Request) -> Response:
        store.workspace(request.params["ws"])
        if request.params["name"] != "workspaceblobstore":
            raise arm_error(404, "UserError", f"Datastore {request.params['name']} not found")
        return Response.json(datastore_body(request, "workspaceblobstore"))

    def datastore_secrets(request: Request) -> Response:
        import base64

        return Response.json({"secretsType": "AccountKey", "key": base64.b64encode(b"emulated-storage-key").decode()})

    router.add("GET", WS + "/datastores", list_datastores)
    router.add("GET", WS + "/datastores/{name}", get_datastore)
    router.add("POST", WS + "/datastores/{name}/listSecrets", datastore_secrets)

    # ------------------------------------------------------------ versioned assets (data, models)
    def versioned(kind: str, table: dict) -> None:
        def put(request: Request) -> Response:
            ws, name, version = request.params["ws"], request.params["name"], request.params["version"]
            store.workspace(ws)
            created = table.get((ws, name, version), {}).get("created", store.now)
            table[(ws, name, version)] = {"created": created, "body": request.json(),
                                          **({"base_model": ""} if kind == "models" else {})}
            return Response.json(_resource(request, f"{kind}/{name}/versions", version, table[(ws, name, version)]["body"],
                                           created), 201 if created == store.now else 200)

        def get(request: Request) -> Response:
            key = (request.params["ws"], request.params["name"], request.params["version"])
            item = table.get(key)
            if item is None:
                raise arm_error(404, "UserError", f"{kind[:-1].capitalize()} container {key[1]} version {key[2]} not found.")
            return Response.json(_resource(request, f"{kind}/{key[1]}/versions", key[2], item["body"], item["created"]))

        def delete(request: Request) -> Response:
            key = (request.params["ws"], request.params["name"], request.params["version"])
            if kind == "models":
                _refuse_if_served(store, key)
            if table.pop(key, None) is None:
                return Response(204)
            return Response(200)

        def list_versions(request: Request) -> Response:
            ws, name = request.params["ws"], request.params["name"]
            items = sorted(((v, item) for (w, n, v), item in table.items() if w == ws and n == name),
                           key=lambda pair: -pair[1]["created"])
            return Response.json({"value": [_resource(request, f"{kind}/{name}/versions", v, item["body"],
                                                      item["created"]) for v, item in items]})

        def get_container(request: Request) -> Response:
            ws, name = request.params["ws"], request.params["name"]
            versions = [v for (w, n, v) in table if w == ws and n == name]
            if not versions:
                raise arm_error(404, "UserError", f"{kind[:-1].capitalize()} container {name} not found.")
            latest = max(versions, key=lambda v: int(v) if v.isdigit() else 0)
            return Response.json(_resource(request, kind, name, {"properties": {"latestVersion": latest,
                                                                                "nextVersion": str(int(latest) + 1) if latest.isdigit() else None}},
                                           0.0))

        router.add("PUT", WS + f"/{kind}/{{name}}/versions/{{version}}", put)
        router.add("GET", WS + f"/{kind}/{{name}}/versions/{{version}}", get)
        router.add("DELETE", WS + f"/{kind}/{{name}}/versions/{{version}}", delete)
        router.add("GET", WS + f"/{kind}/{{name}}/versions", list_versions)
        router.add("GET", WS + f"/{kind}/{{name}}", get_container)

    versioned("data", store.data)
    versioned("models", store.models)


def _refuse_if_served(store: "Store", key: tuple[str, str, str]) -> None:
    ws, name, version = key
    purge(store)
    for (ews, ename), endpoint in store.endpoints.items():
        model_id = endpoint["body"]["properties"].get("modelSettings", {}).get("modelId", "")
        if ews == ws and model_id.rstrip("/").endswith(f"/models/{name}/versions/{version}"):
            raise arm_error(409, "Conflict", f"Model {name}:{version} cannot be deleted: serverless endpoint "
                            f"'{ename}' is using it. Delete the endpoint first.")


__all__ = ["register", "purge", "endpoint_state", "job_status", "family_of", "new_key", "WS"]
