"""Azure Resource Manager: Microsoft.CognitiveServices accounts and model deployments.

Rules enforced (what users hit on the real service; data in
:mod:`cloudtune.service_facts.azure_openai`, sources cited there): the sku must be one ARM
offers for fine-tuned models (``Standard``, ``GlobalStandard``, ``DeveloperTier``,
``ProvisionedManaged``; names compared without case, ``Developer`` refused), Standard and
ProvisionedManaged only where the base model deploys regionally, DeveloperTier only for the
GPT-4.1 family; the model (or checkpoint ``ftchkpt-...``) must exist; at most
``Rules.max_finetuned_deployments`` fine-tuned deployments per resource, summed
capacity within quota (``InsufficientQuota``). Deletes take ``Timeline.delete_s``
(state ``Deleting``), during which the model still counts as deployed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudtune.emulators._http import Request, Response, Router
from cloudtune.emulators.azure._state import arm_error, provisioning_state, purge_deleted, start_delete
from cloudtune.service_facts import azure_openai as rules

if TYPE_CHECKING:
    from cloudtune.emulators.azure._state import Store

ACCOUNT = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{account}"


def is_fine_tuned(model: str) -> bool:
    return ".ft-" in model or model.startswith("ftchkpt-")


def _fine_tuned_base(store: "Store", account: str, model: str) -> str:
    """The base model of a live fine-tuned model or checkpoint in ``account``; 400 when there is none."""
    if model.startswith("ftchkpt-"):
        found = store.find_checkpoint(model)
        if found is not None and found[0]["account"] == account:
            return str(found[0]["model"])
    else:
        known = store.ft_models.get(model)
        if known is not None and not known.get("deleted") and known["account"] == account:
            return str(known.get("base") or model.split(".ft-", 1)[0])
    raise arm_error(400, "DeploymentModelNotSupported", f"The model '{model}' was not found in account '{account}'.")


def purge(store: "Store") -> None:
    purge_deleted(store.cs_deployments, store.now, store.timeline.delete_s)


def deployment_state(store: "Store", dep: dict[str, Any]) -> str:
    return provisioning_state(dep, store.now, dep["created"] + dep["ready_after"])


def deployments_of(store: "Store", account: str, model: str) -> list[str]:
    purge(store)
    return sorted(n for (a, n), d in store.cs_deployments.items() if a == account and d["model"] == model)


def create_deployment(store: "Store", account: str, name: str, model: str, sku: str, capacity: int,
                      *, tags: dict[str, str], ready: bool = False, version: str = "1") -> dict[str, Any]:
    store.account(account)
    purge(store)
    if rules.canonical_sku(sku) is None:
        raise arm_error(400, "InvalidResourceProperties", f"The specified SKU '{sku}' is not supported for model "
                        f"'{model}'. Supported SKUs: {', '.join(rules.DEPLOYMENT_SKUS)}.")
    sku = rules.canonical_sku(sku) or sku
    if is_fine_tuned(model):
        base = _fine_tuned_base(store, account, model)
        refusal = rules.deployment_refusal(base, sku, store.account(account)["region"])
        if refusal is not None:
            raise arm_error(400, "InvalidResourceProperties", f"The specified SKU '{sku}' is not supported for model "
                            f"'{model}' in this region: {refusal}.")
    existing = store.cs_deployments.get((account, name))
    if existing is not None and existing.get("deleting_at") is None:
        existing.update(model=model, sku=sku, capacity=capacity, tags=tags or existing["tags"])
        return existing
    others = [d for (a, _), d in store.cs_deployments.items() if a == account]
    if is_fine_tuned(model) and sum(is_fine_tuned(d["model"]) for d in others) >= store.rules.max_finetuned_deployments:
        raise arm_error(400, "InsufficientQuota", "The resource already has the maximum of "
                        f"{store.rules.max_finetuned_deployments} fine-tuned model deployments. Delete one first.")
    used = sum(d["capacity"] for d in others)
    if used + capacity > store.rules.deployment_capacity_quota:
        available = max(store.rules.deployment_capacity_quota - used, 0)
        raise arm_error(400, "InsufficientQuota", f"This operation require {capacity} new capacity in quota Tokens Per "
                        f"Minute (thousands) - {model}, which is bigger than the current available capacity {available}.")
    dep = {"name": name, "model": model, "version": version, "sku": sku, "capacity": capacity, "tags": tags,
           "created": store.now, "ready_after": 0.0 if ready else store.timeline.deploy_s, "deleting_at": None}
    store.cs_deployments[(account, name)] = dep
    return dep


def register(router: Router, store: "Store") -> None:
    """ARM routes of Cognitive Services accounts and their deployments, over ``store``."""

    def body_of(request: Request, dep: dict[str, Any]) -> dict[str, Any]:
        p = request.params
        return {
            "id": f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/Microsoft.CognitiveServices/accounts/"
                  f"{p['account']}/deployments/{dep['name']}",
            "name": dep["name"], "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": {"name": dep["sku"], "capacity": dep["capacity"]}, "tags": dep["tags"] or None,
            "properties": {"model": {"format": "OpenAI", "name": dep["model"], "version": dep["version"]},
                           "provisioningState": deployment_state(store, dep), "versionUpgradeOption": "NoAutoUpgrade",
                           "rateLimits": [{"key": "request", "renewalPeriod": 10, "count": dep["capacity"]}]},
            "systemData": {"createdBy": "cloudtune-emulator", "createdByType": "Application"},
        }

    def get_account(request: Request) -> Response:
        name = request.params["account"]
        account = store.account(name)
        p = request.params
        return Response.json({
            "id": f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/Microsoft.CognitiveServices/accounts/{name}",
            "name": name, "type": "Microsoft.CognitiveServices/accounts", "kind": account.get("kind", "OpenAI"), "location": account["region"],
            "sku": {"name": "S0"}, "properties": {"endpoint": f"https://{name}.openai.azure.com/",
                                                   "provisioningState": "Succeeded"}})

    def put_deployment(request: Request) -> Response:
        body = request.json()
        props, sku = body.get("properties") or {}, body.get("sku") or {}
        model = props.get("model") or {}
        if model.get("format") != "OpenAI":
            raise arm_error(400, "InvalidResourceProperties", f"Model format {model.get('format')!r} is not supported; use 'OpenAI'.")
        if not model.get("name"):
            raise arm_error(400, "InvalidResourceProperties", "properties.model.name is required.")
        account, name = request.params["account"], request.params["name"]
        existed = (account, name) in store.cs_deployments
        dep = create_deployment(store, account, name, model["name"], sku.get("name", "Standard"),
                                int(sku.get("capacity") or 1), tags=body.get("tags") or {},
                                version=str(model.get("version") or "1"))
        p = request.params
        op = store.add_operation("cs-deployment", (account, name))
        headers = {"Azure-AsyncOperation": f"https://management.azure.com/subscriptions/{p['sub']}/providers/"
                   f"Microsoft.CognitiveServices/locations/{store.account(account)['region']}/operationResults/{op}"
                   f"?api-version={request.arg('api-version') or '2024-10-01'}"}
        return Response.json(body_of(request, dep), 200 if existed else 201, headers)

    def get_deployment(request: Request) -> Response:
        purge(store)
        store.account(request.params["account"])
        dep = store.cs_deployments.get((request.params["account"], request.params["name"]))
        if dep is None:
            raise arm_error(404, "DeploymentNotFound", f"Deployment {request.params['name']} not found.")
        return Response.json(body_of(request, dep))

    def list_deployments(request: Request) -> Response:
        purge(store)
        account = request.params["account"]
        store.account(account)
        return Response.json({"value": [body_of(request, d) for (a, _), d in sorted(store.cs_deployments.items())
                                        if a == account]})

    def delete_deployment(request: Request) -> Response:
        purge(store)
        if not start_delete(store.cs_deployments, (request.params["account"], request.params["name"]), store.now):
            return Response(204)
        return Response(200)

    def operation(request: Request) -> Response:
        purge(store)
        op = store.operations.get(request.params["op"])
        if op is None:
            raise arm_error(404, "NotFound", "Operation not found")
        dep = store.cs_deployments.get(op["key"])
        done = dep is None or deployment_state(store, dep) != "Creating"
        return Response.json({"status": "Succeeded" if done else "Running"})

    router.add("GET", ACCOUNT, get_account)
    router.add("GET", ACCOUNT + "/deployments", list_deployments)
    router.add("PUT", ACCOUNT + "/deployments/{name}", put_deployment)
    router.add("GET", ACCOUNT + "/deployments/{name}", get_deployment)
    router.add("DELETE", ACCOUNT + "/deployments/{name}", delete_deployment)
    router.add("GET", "/subscriptions/{sub}/providers/Microsoft.CognitiveServices/locations/{region}/operationResults/{op}",
               operation)
