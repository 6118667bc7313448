"""One emulator app for every Azure host cloudtune talks to, routed by the Host header.

=====================================  =============================================
host                                   served by
=====================================  =============================================
management.azure.com                   Azure Resource Manager (``_arm_ml``, ``_arm_cs``)
login.microsoftonline.com              Entra ID token endpoint (``_hosts``)
<account>.openai.azure.com,            Azure OpenAI data plane (``_aoai``)
<account>.cognitiveservices.azure.com
<storage>.blob.core.windows.net        Blob storage the SDK uploads data to (``_hosts``)
<endpoint>.<region>.models.ai.azure.com  serverless endpoint chat (``_hosts``)
<region>.api.azureml.ms                Azure ML registries: catalog model versions (``_registry``)
=====================================  =============================================

Each route module registers its handlers with ``register(router, store)`` over the one
:class:`~cloudtune.emulators.azure._state.Store`; the app builds the store and one router per
host kind, checks credentials, holds the lock around each handler and dispatches.

Unknown routes answer 404 naming the path and are remembered in
``/_emulator/state`` (``unknown_routes``), which is how the calls the real SDKs
make were discovered.
"""

from __future__ import annotations

from typing import Any

from cloudtune.emulators._http import EmulatorApp, EmulatorClock, HTTPError, Request, Response, Router
from cloudtune.emulators.azure._state import Rules, Seed, Store, Timeline, error_body
from cloudtune.service_facts import azure_openai as rules


def classify_host(host: str) -> tuple[str, str]:
    """Host header -> (service, first label)."""
    host = host.split(":", 1)[0].lower().rstrip(".")
    label = host.split(".", 1)[0]
    if host == "management.azure.com":
        return "arm", ""
    if host in ("login.microsoftonline.com", "login.windows.net", "sts.windows.net"):
        return "login", ""
    if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")):
        return "aoai", label
    if host.endswith(".blob.core.windows.net"):
        return "blob", label
    if host.endswith(".models.ai.azure.com") or host.endswith(".inference.ai.azure.com"):
        return "inference", label
    if host.endswith(".api.azureml.ms"):
        return "registry", label
    return "unknown", label


class AzureEmulatorApp(EmulatorApp):
    def __init__(self, *, clock: EmulatorClock | None = None, seed: Seed | None = None, rules: Rules | None = None,
                 timeline: Timeline | None = None) -> None:
        super().__init__(clock=clock)
        self.store = Store(seed or Seed(), rules or Rules(), timeline or Timeline(), clock=self.clock)
        self.routers: dict[str, Router] = {kind: Router() for kind in ("arm", "login", "aoai", "blob", "inference",
                                                                       "registry")}
        from cloudtune.emulators.azure import _aoai, _arm_cs, _arm_ml, _arm_ml_jobs, _hosts, _registry

        store, routers = self.store, self.routers
        _arm_ml.register(routers["arm"], store)
        _arm_ml_jobs.register(routers["arm"], store)
        _arm_cs.register(routers["arm"], store)
        _aoai.register(routers["aoai"], store)
        _hosts.register_login(routers["login"])
        _hosts.register_blob(routers["blob"], store)
        _hosts.register_inference(routers["inference"], store)
        _registry.register(routers["registry"])

    @property
    def now(self) -> float:
        return self.clock.now()

    # ------------------------------------------------------------------ hooks
    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return error_body(status, message, code)

    def control_state(self) -> dict[str, Any]:
        return self.store.summary()

    def authenticate(self, request: Request) -> Response | None:
        service = request.params.get("__service", "")
        if service in ("login", "blob"):
            return None  # token endpoint is public; blob access rides on the SAS/key the SDK got
        if service == "aoai":
            ok = bool(request.headers.get("api-key")) or _bearer(request)
            audience = _audience(request)
            if audience is not None:
                self.store.token_audiences.append((request.path, audience))
                # the data plane takes the v1 samples' scope and the legacy Cognitive Services one
                # (service_facts.azure_openai.V1_SCOPE / DATED_SCOPE); a management token is refused
                ok = ok and audience in (rules.V1_SCOPE.removesuffix("/.default"),
                                         rules.DATED_SCOPE.removesuffix("/.default"))
        else:
            ok = _bearer(request)
        if ok:
            return None
        headers = {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'}
        return Response.json(self.error_body(401, "Access token is missing or invalid.", "AuthenticationFailed"), 401, headers)

    # --------------------------------------------------------------- dispatch
    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/"):
            return self._azure_control(request)
        service, label = classify_host(request.headers.get("host", ""))
        router = self.routers.get(service)
        handler, params, path_known = router.match(request.method, request.path) if router else (None, {}, False)
        if handler is None:
            status = 405 if path_known else 404
            with self.lock:
                self.store.unknown_routes.append(f"{request.method} {service} {request.path}")
            return Response.json(self.error_body(status, f"No route {request.method} {request.path} on {service}"), status)
        request.params = {**params, "__service": service, "__label": label}
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        try:
            with self.lock:
                return handler(request)
        except HTTPError as err:
            return Response.json(err.payload, err.status, err.headers)

    def _azure_control(self, request: Request) -> Response:
        """Extra control routes: force a job's raw status; tweak rules and timeline."""
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and parts[:2] == ["_emulator", "status"]:
            body = request.json()
            with self.lock:
                self.store.forced_status[body["job_id"]] = body["status"]
            return Response.json({"ok": True})
        if request.method == "POST" and parts[:2] == ["_emulator", "config"]:
            body = request.json()
            with self.lock:
                for key, value in body.get("rules", {}).items():
                    setattr(self.store.rules, key, value)
                for key, value in body.get("timeline", {}).items():
                    setattr(self.store.timeline, key, value)
                if "clock_speed" in body:
                    self.clock.speed = float(body["clock_speed"])
            return Response.json({"ok": True})
        if request.method == "POST" and parts[:2] == ["_emulator", "external-deployment"]:
            # a deployment made by someone else (portal, az CLI): not tagged by cloudtune
            body = request.json()
            from cloudtune.emulators.azure._arm_cs import create_deployment

            with self.lock:
                create_deployment(self.store, body["account"], body["name"], body["model"], body.get("sku", "Standard"),
                                  int(body.get("capacity", 1)), tags={}, ready=True)
            return Response.json({"ok": True})
        return super().handle(request)


def _audience(request: Request) -> str | None:
    """The ``aud`` claim of the emulator's own bearer tokens (header.payload.signature), else None."""
    import base64
    import json

    auth = request.headers.get("authorization", "")
    parts = auth[7:].split(".") if auth.lower().startswith("bearer ") else []
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims.get("aud") if isinstance(claims, dict) else None


def _bearer(request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    return auth.lower().startswith("bearer ") and len(auth) > 7
