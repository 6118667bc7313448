"""Every state backend passes the one contract (cloudtune.state.testing), against real servers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cloudtune.state.testing import StateStoreContract
from tests.support.state_servers import AzuriteServer, PostgresServer


class TestSQLiteState(StateStoreContract):
    @pytest.fixture
    def state_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'home' / 'ledger.sqlite3'}"

    def set_schema_version(self, url: str, version: int) -> None:
        with sqlite3.connect(url[len("sqlite://"):]) as db:
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
        db.close()


class TestPostgresState(StateStoreContract):
    @pytest.fixture
    def state_url(self, postgres_server: PostgresServer) -> str:
        return postgres_server.new_database()

    def set_schema_version(self, url: str, version: int) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE cloudtune_meta SET value=%s WHERE key='schema_version'", (str(version),))


class TestAzureBlobState(StateStoreContract):
    lock_expiry_s = 15  # the shortest lease Azure grants, set below through the backend's settings

    @pytest.fixture
    def state_url(self, azurite: AzuriteServer) -> str:
        return azurite.new_url(lease_seconds=15)

    def set_schema_version(self, url: str, version: int) -> None:
        from azure.storage.blob import BlobServiceClient

        from tests.support.state_servers import AZURITE_ACCOUNT

        import os

        _, _, rest = url.partition(f"azblob://{AZURITE_ACCOUNT}/")
        container, _, prefix = rest.split("?")[0].partition("/")
        service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
        service.get_blob_client(container, f"{prefix}/meta.json").upload_blob(
            json.dumps({"schema_version": version}), overwrite=True)
