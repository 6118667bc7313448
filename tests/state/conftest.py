"""Session-wide real servers for the shared state backends (see tests/support/state_servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.state_servers import AzuriteServer, MissingServer, PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except MissingServer as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    try:
        server = AzuriteServer().start()
    except MissingServer as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def azurite(azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> AzuriteServer:
    """Azurite, with its connection string in the environment (how the backend and CLIs find it)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    return azurite_server
