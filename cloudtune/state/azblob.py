"""State in Azure Blob Storage: one JSON document per run, the run lock a blob lease.

``CLOUDTUNE_STATE=azblob://ACCOUNT/CONTAINER[/PREFIX]`` for Azure users who already have a
storage account (an AzureML workspace has one). Auth: ``AZURE_STORAGE_CONNECTION_STRING`` when
set (its account is used), else ``DefaultAzureCredential`` against
``https://ACCOUNT.blob.core.windows.net``. Modelled on Terraform's ``azurerm`` backend:

- ``PREFIX/runs/RUN.json`` holds the run and its step journal. Every write is conditional on the
  ETag it read (``If-Match``; ``If-None-Match: *`` to create), never last-writer-wins: a writer
  that lost the race reads again and re-applies its change.
- ``PREFIX/locks/RUN.lock`` is the run lock: a lease of ``lease_seconds`` (default 60, the
  longest finite lease Azure grants; 15 the shortest), renewed by a thread of the holder every
  third of that. A dead holder stops renewing and its lease expires; ``cloudtune unlock RUN``
  breaks it at once after showing who held it (the lock blob's metadata).
- ``PREFIX/index.json`` lists the run ids with their creation times, so ``list`` and ``status``
  read one small document instead of listing every blob (the listing's XML costs milliseconds
  per run). A run enters the index before its document is written: a writer killed in between
  leaves an id without a document, which readers skip.
- ``PREFIX/meta.json`` carries the schema version; a newer one is refused, never written.

Settings ride in the URL's query: ``?lease_seconds=15`` (tests use the shortest lease).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core import MatchConditions
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContentSettings

from cloudtune import errors
from cloudtune.state.base import SCHEMA_VERSION, LockHolder, StateSettings, StateStore, StepRecord, refuse_newer

_JSON = ContentSettings(content_type="application/json")
_RACE_RETRIES = 100  # conditional writes that lost a race are re-read and re-applied this many times


class BlobStore(StateStore):
    backend = "azblob"

    def __init__(self, account: str, container: str, prefix: str = "", settings: StateSettings | None = None) -> None:
        super().__init__()
        settings = settings or StateSettings()
        self.lease_s = int(settings.number("lease_seconds", 60))
        if not (15 <= self.lease_s <= 60):
            raise errors.ConfigError(f"lease_seconds={self.lease_s}: Azure grants leases of 15 to 60 seconds.")
        self._url = f"azblob://{account}/{container}" + (f"/{prefix}" if prefix else "")
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._leases: dict[str, tuple[BlobLeaseClient, threading.Event, threading.Thread]] = {}
        try:
            connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
            if connection_string:
                service = BlobServiceClient.from_connection_string(connection_string)
            else:
                from azure.identity import DefaultAzureCredential

                service = BlobServiceClient(f"https://{account}.blob.core.windows.net",
                                            credential=DefaultAzureCredential())
            self._container = service.get_container_client(container)
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            refuse_newer(self._version(), self.location)
            self._write_meta()
        except ClientAuthenticationError as exc:
            raise errors.AuthError(f"The Azure Blob state at {self.location} refused the credentials ({exc.message}).",
                                   hint="Set AZURE_STORAGE_CONNECTION_STRING, or sign in (az login) for "
                                        "DefaultAzureCredential.") from None
        except AzureError as exc:
            raise self._unusable(exc) from None

    @classmethod
    def from_url(cls, url: str, settings: StateSettings) -> "BlobStore":
        parts = urlsplit(url)
        path = parts.path.strip("/").split("/", 1)
        if not parts.netloc or not path[0]:
            raise errors.ConfigError(f"{url!r} is not azblob://ACCOUNT/CONTAINER[/PREFIX].")
        return cls(parts.netloc, path[0], path[1] if len(path) > 1 else "", settings)

    @property
    def location(self) -> str:
        return self._url

    def _unusable(self, exc: Exception) -> errors.StateUnusable:
        message = getattr(exc, "message", None) or str(exc)
        return errors.StateUnusable(
            f"The Azure Blob state at {self.location} cannot be used ({message.strip().splitlines()[0]}).",
            hint="Check CLOUDTUNE_STATE, the storage account's network access and your credentials.")

    def _blob(self, name: str) -> Any:
        return self._container.get_blob_client(self._prefix + name)

    # ------------------------------------------------------------------ schema
    def _version(self) -> int:
        try:
            return int(json.loads(self._blob("meta.json").download_blob().readall())["schema_version"])
        except ResourceNotFoundError:
            return 0

    def _write_meta(self) -> None:
        if self._version() < SCHEMA_VERSION:
            self._blob("meta.json").upload_blob(json.dumps({"schema_version": SCHEMA_VERSION}), overwrite=True,
                                                content_settings=_JSON)

    def schema_version(self) -> int:
        return self._version()

    # ------------------------------------------------------------------ documents with ETags
    def _read_doc(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            downloaded = self._blob(f"runs/{run_id}.json").download_blob()
            return json.loads(downloaded.readall()), downloaded.properties.etag
        except ResourceNotFoundError:
            return None, None

    def _index_add(self, run_id: str, created_at: float) -> None:
        blob = self._blob("index.json")
        for _ in range(_RACE_RETRIES):
            try:
                downloaded = blob.download_blob()
                index, etag = json.loads(downloaded.readall()), downloaded.properties.etag
            except ResourceNotFoundError:
                index, etag = {"runs": {}}, None
            if index["runs"].get(run_id) == created_at:
                return
            index["runs"][run_id] = created_at
            try:
                if etag is None:
                    blob.upload_blob(json.dumps(index), overwrite=False, content_settings=_JSON)
                else:
                    blob.upload_blob(json.dumps(index), overwrite=True, content_settings=_JSON, etag=etag,
                                     match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
        raise errors.StateUnusable(f"The run index at {self.location} kept changing under a write.")

    def _change(self, run_id: str, change: Any, *, must_exist: bool = True) -> Any:
        """Read the run's document, apply ``change(doc)`` and write it back only if nobody wrote
        in between (If-Match / If-None-Match); on a lost race, read again and re-apply."""
        blob = self._blob(f"runs/{run_id}.json")
        for _ in range(_RACE_RETRIES):
            doc, etag = self._read_doc(run_id)
            if doc is None and must_exist:
                raise errors.InvalidInput(f"No run {run_id!r} in the state at {self.location}.")
            if doc is not None and int(doc.get("schema_version", 1)) > SCHEMA_VERSION:
                refuse_newer(int(doc["schema_version"]), f"{self.location}/runs/{run_id}.json")
            doc = doc or {"schema_version": SCHEMA_VERSION, "run": None, "steps": []}
            result, metadata = change(doc)
            body = json.dumps(doc)
            try:
                if etag is None:
                    blob.upload_blob(body, overwrite=False, metadata=metadata, content_settings=_JSON)
                else:
                    blob.upload_blob(body, overwrite=True, metadata=metadata, content_settings=_JSON,
                                     etag=etag, match_condition=MatchConditions.IfNotModified)
                return result
            except (ResourceModifiedError, ResourceExistsError):
                continue  # someone wrote in between: read their version and apply ours on top
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
        raise errors.StateUnusable(f"Run {run_id}'s document at {self.location} kept changing under a write.")

    # ------------------------------------------------------------------ runs
    def _write_run(self, run_id: str, provider: str, created_at: float, status: str, step: str,
                   doc: str, *, mode: str) -> None:
        run = json.loads(doc)
        metadata = {"created_at": repr(created_at), "provider": provider, "status": status, "step": step}

        def change(current: dict[str, Any]) -> tuple[None, dict[str, str]]:
            if mode == "create" and current.get("run") is not None:
                raise errors.InvalidInput(f"Run {run_id} already exists in the state at {self.location}.")
            if mode == "update" and current.get("run") is None:
                return None, metadata  # nothing to update: the run was never created here
            current["run"] = run
            return None, metadata

        try:
            if mode != "update":
                self._index_add(run_id, created_at)  # first: an indexed id without a document is skipped
            self._change(run_id, change, must_exist=mode == "update")
        except AzureError as exc:
            raise self._unusable(exc) from None

    def _read_run(self, run_id: str) -> str | None:
        try:
            doc, _ = self._read_doc(run_id)
        except AzureError as exc:
            raise self._unusable(exc) from None
        if doc is None or doc.get("run") is None:
            return None
        if int(doc.get("schema_version", 1)) > SCHEMA_VERSION:
            return json.dumps({"run_id": run_id, "schema_version": doc["schema_version"]})  # unreadable: reported
        return json.dumps(doc["run"])

    def _read_runs(self, run_ids: list[str]) -> list[tuple[str, str | None]]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(zip(run_ids, pool.map(self._read_run, run_ids)))

    def _run_ids(self, *, older_than: float | None = None, limit: int | None = None) -> list[str]:
        try:
            index = json.loads(self._blob("index.json").download_blob().readall())["runs"]
        except ResourceNotFoundError:
            index = {}
        except AzureError as exc:
            raise self._unusable(exc) from None
        found = [(float(created), run_id) for run_id, created in index.items()
                 if older_than is None or float(created) <= older_than]
        found.sort(reverse=True)
        ids = [run_id for _, run_id in found]
        return ids if limit is None else ids[:limit]

    # ------------------------------------------------------------------ steps
    def _append_step(self, run_id: str, action: str, phase: str, intent_id: int | None, at: float,
                     data: str) -> int:
        def change(current: dict[str, Any]) -> tuple[int, dict[str, str] | None]:
            steps = current.setdefault("steps", [])
            step_id = (steps[-1]["id"] + 1) if steps else 1
            steps.append({"id": step_id, "action": action, "phase": phase, "intent_id": intent_id, "at": at,
                          "data": json.loads(data)})
            run = current.get("run") or {}
            return step_id, {"created_at": repr(_created(run)), "provider": str(run.get("provider", "")),
                             "status": str(run.get("status", "")), "step": str(run.get("step", ""))}

        try:
            return int(self._change(run_id, change, must_exist=False))
        except AzureError as exc:
            raise self._unusable(exc) from None

    def history(self, run_id: str) -> list[StepRecord]:
        try:
            doc, _ = self._read_doc(run_id)
        except AzureError as exc:
            raise self._unusable(exc) from None
        return [StepRecord(s["id"], run_id, s["action"], s["phase"], s.get("intent_id"), s["at"], s["data"])
                for s in (doc or {}).get("steps", [])]

    # ------------------------------------------------------------------ locks: blob leases
    def _lock_blob(self, run_id: str) -> Any:
        blob = self._blob(f"locks/{run_id}.lock")
        try:
            blob.upload_blob(b"", overwrite=False)
        except (ResourceExistsError, HttpResponseError) as exc:
            if getattr(exc, "status_code", 409) not in (409, 412):
                raise
        return blob

    def _try_lock(self, holder: LockHolder) -> bool:
        try:
            blob = self._blob(f"locks/{holder.run_id}.lock")
            lease = BlobLeaseClient(blob)
            try:
                try:
                    lease.acquire(lease_duration=self.lease_s)
                except ResourceNotFoundError:  # the run's first lock: make the blob, then lease it
                    self._lock_blob(holder.run_id)
                    lease.acquire(lease_duration=self.lease_s)
            except HttpResponseError as exc:
                if exc.status_code == 409:  # LeaseAlreadyPresent: another holder's lease is live
                    return False
                raise
            blob.set_blob_metadata({"holder": holder.to_json()}, lease=lease)
        except AzureError as exc:
            raise self._unusable(exc) from None
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, stop), daemon=True,
                                   name=f"cloudtune-lease-{holder.run_id}")
        renewer.start()
        self._leases[holder.run_id] = (lease, stop, renewer)
        return True

    def _renew(self, lease: BlobLeaseClient, stop: threading.Event) -> None:
        """The holder keeps its lease while it works; a dead holder stops renewing and it expires."""
        while not stop.wait(self.lease_s / 3):
            try:
                lease.renew()
            except AzureError:
                pass  # a blip: the next renewal (a third of the lease later) tries again

    def _unlock(self, run_id: str) -> None:
        entry = self._leases.pop(run_id, None)
        if entry is None:
            return
        lease, stop, renewer = entry
        stop.set()
        renewer.join(timeout=5)
        try:
            lease.release()  # the holder's metadata stays: it describes nobody once the lease is gone
        except AzureError:
            pass  # the lease expires by itself within lease_seconds

    def _holder_of(self, run_id: str, properties: Any) -> LockHolder | None:
        if getattr(properties.lease, "state", None) != "leased":
            return None
        return LockHolder.from_json((properties.metadata or {}).get("holder"), run_id) or LockHolder(
            run_id, "unknown host", 0, "a holder that did not say who it is", 0.0)

    def lock_holder(self, run_id: str) -> LockHolder | None:
        try:
            return self._holder_of(run_id, self._blob(f"locks/{run_id}.lock").get_blob_properties())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._unusable(exc) from None

    def lock_holders(self) -> list[LockHolder]:
        holders = []
        start = self._prefix + "locks/"
        for item in self._container.list_blobs(name_starts_with=start, include=["metadata"]):
            holder = self._holder_of(item.name[len(start):-len(".lock")], item)
            if holder:
                holders.append(holder)
        return holders

    def break_lock(self, run_id: str) -> LockHolder | None:
        holder = self.lock_holder(run_id)
        if holder is None:
            return None
        try:
            BlobLeaseClient(self._blob(f"locks/{run_id}.lock")).break_lease(lease_break_period=0)
        except AzureError as exc:
            raise self._unusable(exc) from None
        return holder

    def close(self) -> None:
        super().close()
        self._container.close()


def _created(run: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(run["created_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return time.time()
