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

    def test_list_reads_the_document_where_a_writer_died_mid_write(self, state_url: str) -> None:
        """A writer killed after marking its index entry pending leaves either no document (killed
        before writing it) or a document newer than the index's copy: `list` shows the truth."""
        import hashlib
        import os

        from azure.storage.blob import BlobServiceClient

        from cloudtune.state import connect_state
        from cloudtune.state.testing import spec
        from tests.support.state_servers import AZURITE_ACCOUNT

        store = connect_state(state_url)
        try:
            run = store.create_run(spec())
            copy = json.loads(run.model_dump_json())  # the index's copy as it was before the write below
            run.fine_tuned_model = "ft:newer"
            store.save(run)
            _, _, rest = state_url.partition(f"azblob://{AZURITE_ACCOUNT}/")
            container, _, prefix = rest.split("?")[0].partition("/")
            shard = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"]) \
                .get_blob_client(container, f"{prefix}/index/{hashlib.sha256(run.run_id.encode()).hexdigest()[0]}.json")
            entries = json.loads(shard.download_blob().readall())
            entry = entries["runs"][run.run_id]
            entry["run"], entry["pending"] = copy, {"killed-writer": 1.0}  # its copy never came
            entries["runs"]["20261101-000000-dead00"] = {"created": 1.0, "pending": {"killed-creator": 1.0}}
            shard.upload_blob(json.dumps(entries), overwrite=True)
            listed = store.list_runs()
            assert [r.run_id for r in listed] == [run.run_id]  # the run whose document never came is skipped
            assert listed[0].fine_tuned_model == "ft:newer"
            run.job_id = "job-after"
            store.save(run)  # the next write settles the entry: the killed writer's old token is dropped
            entry = json.loads(shard.download_blob().readall())["runs"][run.run_id]
            assert "pending" not in entry and entry["run"]["job_id"] == "job-after"
        finally:
            store.close()

    def test_runs_of_the_first_index_format_are_still_listed(self, state_url: str) -> None:
        """A state whose index.json (ids and creation times only) predates the shards: its runs
        are listed from their documents, and a run's next write moves it into its shard."""
        import os

        from azure.storage.blob import BlobServiceClient

        from cloudtune.state import connect_state
        from cloudtune.state.testing import spec
        from tests.support.state_servers import AZURITE_ACCOUNT

        store = connect_state(state_url)
        try:
            run = store.create_run(spec())
            _, _, rest = state_url.partition(f"azblob://{AZURITE_ACCOUNT}/")
            container, _, prefix = rest.split("?")[0].partition("/")
            client = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
            for blob in client.get_container_client(container).list_blobs(name_starts_with=f"{prefix}/index/"):
                client.get_blob_client(container, blob.name).delete_blob()
            client.get_blob_client(container, f"{prefix}/index.json").upload_blob(
                json.dumps({"runs": {run.run_id: run.created_at.timestamp()}}), overwrite=True)
            assert [r.model_dump(mode="json") for r in store.list_runs()] == [run.model_dump(mode="json")]
            run.job_id = "job-later"
            store.save(run)
            client.get_blob_client(container, f"{prefix}/index.json").delete_blob()
            assert [r.job_id for r in store.list_runs()] == ["job-later"]  # now from its shard
        finally:
            store.close()
