"""HTTPS for the Azure emulator without touching the SDKs: a CONNECT proxy that terminates TLS.

Azure SDKs talk to fixed host names (``management.azure.com``,
``<account>.openai.azure.com``, ``<storage>.blob.core.windows.net``...). Instead
of hooking every client, the emulator listens as an ``HTTPS_PROXY``: a client
sends ``CONNECT host:443``, we answer 200, then speak TLS on that socket with a
leaf certificate for exactly that host, signed by a throw-away test CA
(``trustme``). With ``REQUESTS_CA_BUNDLE`` (requests / azure-core / msal) and
``SSL_CERT_FILE`` (httpx2 / openai) pointing at the CA, the SDKs run unchanged
and the decrypted requests (Host header intact) go to the emulator app.

The same port also answers plain HTTP, so the ``/_emulator/...`` control routes
work on ``http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

from cloudtune.emulators._http import LOOPBACK, EmulatorApp, EmulatorHTTPServer, EmulatorServer, RequestHandler


class TestCertificateAuthority:
    """A trustme CA that issues (and caches) one leaf certificate per host name."""

    def __init__(self) -> None:
        import trustme

        self._ca = trustme.CA(organization_name="cloudtune azure emulator")
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def write_bundle(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ca.cert_pem.write_to_path(str(path))
        return path

    def server_context(self, host: str) -> ssl.SSLContext:
        host = host.lower()
        with self._lock:
            context = self._contexts.get(host)
            if context is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                self._ca.issue_cert(host).configure_cert(context)
                self._contexts[host] = context
            return context


class _ProxyHandler(RequestHandler):
    """Plain HTTP requests are served directly; CONNECT opens a TLS tunnel to the app."""

    server: "ProxyServer"

    def do_CONNECT(self) -> None:  # noqa: N802 - stdlib naming
        host = self.path.rsplit(":", 1)[0].strip("[]")
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.close_connection = True
        try:
            tls = self.server.authority.server_context(host).wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client gave up or did not trust us; nothing to answer
        self.server.tunnels_opened += 1
        try:
            # A fresh handler on the decrypted socket serves every request of the tunnel
            # (keep-alive) exactly as the plain emulator server would.
            RequestHandler(tls, self.client_address, self.server)
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass


class ProxyServer(EmulatorHTTPServer):
    handler_class = _ProxyHandler

    def __init__(self, address: tuple[str, int], app: EmulatorApp, verbose: bool,
                 authority: TestCertificateAuthority) -> None:
        self.authority = authority
        self.tunnels_opened = 0
        super().__init__(address, app, verbose)


class TlsProxy(EmulatorServer):
    """Runs the proxy in a background thread (or in the foreground for ``cloudtune emulate``);
    the lifecycle (port, url, start, stop, context manager) is :class:`EmulatorServer`'s."""

    thread_name = "azure-emulator-proxy"

    def __init__(self, app: EmulatorApp, *, host: str = LOOPBACK, port: int = 0, verbose: bool = False,
                 authority: TestCertificateAuthority | None = None) -> None:
        self.authority = authority or TestCertificateAuthority()
        super().__init__(app, host=host, port=port, verbose=verbose)

    def _make_server(self, address: tuple[str, int], app: EmulatorApp, verbose: bool) -> ProxyServer:
        return ProxyServer(address, app, verbose, self.authority)

    def client_env(self, ca_bundle: Path) -> dict[str, Any]:
        """Environment variables that point unchanged SDKs at this proxy and trust its CA."""
        return {
            "HTTPS_PROXY": self.url,
            "https_proxy": self.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(ca_bundle),
            "SSL_CERT_FILE": str(ca_bundle),
        }
