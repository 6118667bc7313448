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
- ``PREFIX/index/H.json`` (16 shards, ``H`` the first hex digit of the run id's SHA-256) hold,
  per run, its creation time and a copy of its run document, so ``list`` reads 16 small blobs
  instead of one document per run (the SDK spends ~10 ms of Python per download; listing blobs
  with metadata costs ~2 ms of XML per run). The run document stays the truth; the copy is kept
  beside it like every other write (ETag conditions, re-read and re-applied on 412/409):
  a writer first marks the run's entry *pending* (a token of its own), then writes the document
  (whose ``revision`` counts its writes), then stores the copy with that revision (never over a
  higher one, so racing writers end on the newest) and removes its token. A reader that finds a
  pending token reads the document itself: a writer killed in between (an entry whose document
  is missing, or newer than the copy) costs one download, never a wrong line. Tokens older than
  an hour are dropped by the next write of that run.
- ``PREFIX/meta.json`` carries the schema version; a newer one is refused, never written.

Settings ride in the URL's query: ``?lease_seconds=15`` (tests use the shortest lease).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
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
_SHARDS = "0123456789abcdef"  # index shards: a write rewrites 1/16 of the summaries; list reads 16 blobs
_STALE_PENDING_S = 3600  # a pending token this old was left by a killed writer (a write takes seconds)


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

    def _shard_name(self, run_id: str) -> str:
        return f"index/{hashlib.sha256(run_id.encode()).hexdigest()[0]}.json"

    def _shard_change(self, run_id: str, change: Any) -> None:
        """Apply ``change(entries)`` to the run's index shard, written only if nobody wrote in
        between (If-Match / If-None-Match); on a lost race, read again and re-apply."""
        blob = self._blob(self._shard_name(run_id))
        for _ in range(_RACE_RETRIES):
            try:
                downloaded = blob.download_blob()
                shard, etag = json.loads(downloaded.readall()), downloaded.properties.etag
            except ResourceNotFoundError:
                shard, etag = {"runs": {}}, None
            if not change(shard["runs"]):
                return
            try:
                if etag is None:
                    blob.upload_blob(json.dumps(shard), overwrite=False, content_settings=_JSON)
                else:
                    blob.upload_blob(json.dumps(shard), overwrite=True, content_settings=_JSON, etag=etag,
                                     match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
        raise errors.StateUnusable(f"The run index at {self.location} kept changing under a write.")

    def _mark_pending(self, run_id: str, created_at: float, token: str) -> None:
        def change(entries: dict[str, Any]) -> bool:
            entry = entries.setdefault(run_id, {"created": created_at})
            entry.setdefault("pending", {})[token] = time.time()
            return True

        self._shard_change(run_id, change)

    def _settle(self, run_id: str, created_at: float, token: str, written: tuple[int, Any] | None) -> None:
        """Store the run document as written (revision, run) unless a newer one is already there,
        and remove this writer's pending token (and any a killed writer left long ago)."""
        def change(entries: dict[str, Any]) -> bool:
            entry = entries.setdefault(run_id, {"created": created_at})
            pending = entry.get("pending", {})
            pending.pop(token, None)
            for other, since in list(pending.items()):
                if time.time() - float(since) > _STALE_PENDING_S:
                    del pending[other]
            if written is not None and written[1] is not None and written[0] > int(entry.get("revision", 0)):
                entry["revision"], entry["run"] = written
            if not pending:
                entry.pop("pending", None)
                if entry.get("run") is None:
                    del entries[run_id]  # nothing was created: an update of a run that never existed
            return True

        self._shard_change(run_id, change)

    def _shards(self) -> dict[str, dict[str, Any]]:
        def read(digit: str) -> dict[str, Any]:
            try:
                return json.loads(self._blob(f"index/{digit}.json").download_blob().readall())["runs"]
            except ResourceNotFoundError:
                return {}

        def legacy() -> dict[str, Any]:
            # index.json (run ids and creation times only) as the first Blob state wrote it: its
            # runs are read from their documents (a token older than an hour, dropped, and the
            # entry moved into its shard, by the run's next write)
            try:
                runs = json.loads(self._blob("index.json").download_blob().readall())["runs"]
            except ResourceNotFoundError:
                return {}
            return {run_id: {"created": created, "pending": {"index.json": 0}} for run_id, created in runs.items()}

        entries: dict[str, dict[str, Any]] = {}
        try:
            with ThreadPoolExecutor(max_workers=len(_SHARDS) + 1) as pool:
                old = pool.submit(legacy)
                for shard in pool.map(read, _SHARDS):
                    entries.update(shard)
                entries = {**old.result(), **entries}
        except AzureError as exc:
            raise self._unusable(exc) from None
        return entries

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
            doc["revision"] = int(doc.get("revision", 0)) + 1  # orders the index's copies of this run
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

        def change(current: dict[str, Any]) -> tuple[tuple[int, Any], dict[str, str]]:
            if mode == "create" and current.get("run") is not None:
                raise errors.InvalidInput(f"Run {run_id} already exists in the state at {self.location}.")
            if mode != "update" or current.get("run") is not None:  # an update of no run creates nothing
                current["run"] = run
            return (current["revision"], current.get("run")), metadata

        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            # first: a reader that finds the token reads the document itself (a writer killed
            # before the copy below leaves the token, never a wrong copy)
            self._mark_pending(run_id, created_at, token)
            try:
                written = self._change(run_id, change, must_exist=mode == "update")
            except errors.CloudtuneError:
                self._settle(run_id, created_at, token, None)  # refused: the document is unchanged
                raise
            self._settle(run_id, created_at, token, written)
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

    def _listed(self, older_than: float | None, limit: int | None) -> list[tuple[str, dict[str, Any]]]:
        entries = self._shards()
        found = [(float(entry["created"]), run_id, entry) for run_id, entry in entries.items()
                 if older_than is None or float(entry["created"]) <= older_than]
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        found = found if limit is None else found[:limit]
        return [(run_id, entry) for _, run_id, entry in found]

    def _run_ids(self, *, older_than: float | None = None, limit: int | None = None) -> list[str]:
        return [run_id for run_id, _ in self._listed(older_than, limit)]

    def _list_docs(self, older_than: float | None, limit: int | None) -> list[tuple[str, str | None]]:
        """From the index's copies; a run with a write in flight (or a killed writer's token) is
        read from its document, the truth."""
        listed = self._listed(older_than, limit)
        unsettled = [run_id for run_id, entry in listed if entry.get("pending")]
        truth = dict(self._read_runs(unsettled)) if unsettled else {}
        return [(run_id, truth[run_id] if run_id in truth
                 else (json.dumps(entry["run"]) if entry.get("run") is not None else None))
                for run_id, entry in listed]

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
