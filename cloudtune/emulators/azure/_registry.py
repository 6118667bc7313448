"""Azure ML registries (``https://<region>.api.azureml.ms``): discovery and the catalog models'
versions, which is where serverless fine-tuning gets the *versioned* id it creates a job from
(``azureml://registries/azureml/models/Phi-4-mini-instruct/versions/<n>``, as
MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/how-to/fine-tune-serverless.md`` (01/28/2026) does
with ``registry_ml_client.models.get(name, label="latest")``)."""

from __future__ import annotations

from typing import Any

from cloudtune.emulators._http import Request, Response, Router
from cloudtune.emulators.azure._state import arm_error
from cloudtune.service_facts import azure_serverless

REGISTRY_SUBSCRIPTION = "00000000-0000-4000-8000-00000000feed"
REGISTRY_GROUP = "registry-builtin-prod-eastus-01"
MFE = ("/mferp/managementfrontend/subscriptions/{sub}/resourceGroups/{rg}/providers/"
       "Microsoft.MachineLearningServices/registries/{registry}")
#: the catalog's latest version of each model, as the emulator publishes it
LATEST_VERSION = 3


def registry_of(name: str) -> set[str]:
    return {m.registry for m in azure_serverless.FINE_TUNABLE} | {"azureml"}


def register(router: Router) -> None:
    """Registry discovery and the catalog's model versions (from the dated service facts; no state)."""

    def discovery(request: Request) -> Response:
        name = request.params["registry"]
        if name not in registry_of(name):  # the catalog registries: azureml, azureml-meta, azureml-mistral
            raise arm_error(404, "NotFound", f"Registry {name} not found.")
        return Response.json({
            "registryName": name, "primaryRegion": "eastus", "regions": ["eastus", "westus3"],
            "primaryRegionResourceProviderUri": "https://eastus.api.azureml.ms/",
            "subscriptionId": REGISTRY_SUBSCRIPTION, "resourceGroup": REGISTRY_GROUP,
        })

    def version_body(request: Request, model: str, version: int) -> dict[str, Any]:
        p = request.params
        return {
            "id": f"azureml://registries/{p['registry']}/models/{model}/versions/{version}",
            "name": str(version), "type": "Microsoft.MachineLearningServices/registries/models/versions",
            "properties": {"modelType": "custom_model", "flavors": {},
                           "modelUri": f"azureml://registries/{p['registry']}/models/{model}",
                           "tags": {}, "properties": {}, "isAnonymous": False, "isArchived": False},
            "systemData": {"createdAt": "2025-11-01T00:00:00Z", "createdBy": "azureml"},
        }

    def model_named(request: Request) -> str:
        wanted = request.params["model"]
        if request.params["registry"] == "azureml" and wanted.lower() in (n.lower() for n in azure_serverless.NOT_FINE_TUNABLE):
            return wanted  # in the catalog, only not fine-tunable
        found = azure_serverless.lookup(wanted)
        if found is None or found.registry != request.params["registry"]:
            raise arm_error(404, "NotFound", f"Model {request.params['model']} not found in registry "
                            f"{request.params['registry']}.")
        return found.name

    def list_versions(request: Request) -> Response:
        model = model_named(request)
        return Response.json({"value": [version_body(request, model, v) for v in range(LATEST_VERSION, 0, -1)]})

    def get_version(request: Request) -> Response:
        model = model_named(request)
        version = request.params["version"]
        if not version.isdigit() or not 1 <= int(version) <= LATEST_VERSION:
            raise arm_error(404, "NotFound", f"Model {model} version {version} not found.")
        return Response.json(version_body(request, model, int(version)))

    router.add("GET", "/registrymanagement/v1.0/registries/{registry}/discovery", discovery)
    router.add("GET", MFE + "/models/{model}/versions", list_versions)
    router.add("GET", MFE + "/models/{model}/versions/{version}", get_version)
