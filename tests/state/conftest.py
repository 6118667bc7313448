"""Real servers for the shared state backends, one each per test session
(see tests/support/state_servers.py; the fault matrix's shared-state rows use the same ones)."""

from __future__ import annotations

import pytest

from tests.support.state_servers import (
    AzuriteServer,
    MissingServer,
    PostgresServer,
    shared_azurite,
    shared_postgres,
)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    try:
        return shared_postgres()
    except MissingServer as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def azurite_server() -> AzuriteServer:
    try:
        return shared_azurite()
    except MissingServer as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def azurite(azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> AzuriteServer:
    """Azurite, with its connection string in the environment (how the backend and CLIs find it)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    return azurite_server
