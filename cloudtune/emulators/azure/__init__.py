"""Azure emulator (``cloudtune emulate azure``): ARM, Azure OpenAI, blob, serverless endpoints and
Entra ID tokens behind one HTTPS proxy, so ``azure-ai-ml``, ``azure-identity`` and ``openai`` run
unchanged against it. See :mod:`cloudtune.emulators.azure._app` for the host table."""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from cloudtune.emulators._http import EmulatorClock
from cloudtune.emulators.azure._app import AzureEmulatorApp
from cloudtune.emulators.azure._state import RESOURCE_GROUP, SUBSCRIPTION_ID, TENANT_ID, Rules, Seed, Timeline
from cloudtune.emulators.azure._tls import TlsProxy


class AzureEmulator:
    """App + TLS proxy + CA bundle on disk; ``env()`` is what a client process needs."""

    def __init__(self, *, port: int = 0, state_dir: Path | None = None, clock: EmulatorClock | None = None,
                 seed: Seed | None = None, rules: Rules | None = None, timeline: Timeline | None = None,
                 verbose: bool = False) -> None:
        self.app = AzureEmulatorApp(clock=clock, seed=seed, rules=rules, timeline=timeline)
        self.proxy = TlsProxy(self.app, port=port, verbose=verbose)
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="cloudtune-azure-emulator-"))
        self.ca_bundle = self.proxy.authority.write_bundle(self.state_dir / "ca.pem")

    @property
    def url(self) -> str:
        return self.proxy.url

    def start(self) -> "AzureEmulator":
        self.proxy.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()

    def __enter__(self) -> "AzureEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, *, project: str = "ct-project", account: str = "ct-aoai") -> dict[str, str]:
        """Environment for a client: proxy + CA, and the emulated resources' names. The credentials
        are placeholders: the emulator accepts any non-empty secret."""
        seed = self.app.store.seed
        return {
            **self.proxy.client_env(self.ca_bundle),
            "AZURE_SUBSCRIPTION_ID": seed.subscription_id,
            "AZURE_RESOURCE_GROUP": seed.resource_group,
            "AZURE_AI_PROJECT": project,
            "AZURE_OPENAI_ENDPOINT": f"https://{account}.openai.azure.com/",
            "AZURE_OPENAI_ACCOUNT": account,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_CLIENT_ID": "00000000-0000-4000-8000-0000000000c1",
            "AZURE_CLIENT_SECRET": "emulator-accepts-any-secret",
        }

    def state(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_emulator/state", timeout=10) as response:  # loopback, never proxied
            return json.loads(response.read())


def control(url: str, path: str, payload: Any) -> Any:
    """POST a control request (faults, status, config) to a running emulator."""
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


__all__ = ["AzureEmulator", "AzureEmulatorApp", "Rules", "Seed", "Timeline", "control",
           "SUBSCRIPTION_ID", "RESOURCE_GROUP", "TENANT_ID"]
