"""What each service holds, read from the emulator's own state (never from cloudtune's ledger).

A snapshot is ``{kind: {id: info}}`` with kinds ``job``, ``file``, ``model``, ``deployment``,
``endpoint`` and ``data_asset``; ``info["run"]`` is the run tag the service stores with the
resource (job metadata / ARM tags / the run-tagged file name) when it has one, and
``info["deleting"]`` marks a resource whose delete was accepted but has not finished (Azure
keeps those listed in ``Deleting`` for a while; billing has stopped, so it counts as gone).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

Snapshot = dict[str, dict[str, dict[str, Any]]]
KINDS = ("job", "file", "model", "deployment", "endpoint", "data_asset")
RUN_TAG = "cloudtune_run_id"
_TAGGED_NAME = re.compile(r"^ct-(?P<run>.+)-(?:train|training|validation)(?:\.jsonl)?$")


def empty() -> Snapshot:
    return {kind: {} for kind in KINDS}


def run_of_name(name: str | None) -> str | None:
    """The run id a run-tagged upload name carries (``ct-<run_id>-train.jsonl``), else None."""
    found = _TAGGED_NAME.match(name or "")
    return found.group("run") if found else None


def openai_snapshot(app: Any, homes: list[Path]) -> Snapshot:
    """OpenAI emulator: jobs, fine-tune files and fine-tuned models. OpenAI has no deployments;
    the provider keeps deployment names in ``<home>/openai/deployments.json`` (per API endpoint),
    so those files are the deployment records, read for every home the scenario used."""
    snap = empty()
    with app.lock:
        for job_id in list(app.jobs):
            app.job(job_id)  # bring its timeline up to now, as a GET would
        for job in app.jobs.values():
            snap["job"][job.id] = {"run": (job.metadata or {}).get(RUN_TAG), "status": job.forced_status or job.status}
        for stored in app.files.values():
            if stored.purpose == "fine-tune":  # result files belong to jobs, not runs
                snap["file"][stored.id] = {"run": run_of_name(stored.filename), "name": stored.filename,
                                           "bytes": len(stored.content)}
        for model_id, record in app.models.items():
            job = app.jobs.get(record["job_id"])
            snap["model"][model_id] = {"run": (job.metadata or {}).get(RUN_TAG) if job else None}
    for home in homes:
        path = home / "openai" / "deployments.json"
        try:
            everything = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        for section in everything.values():
            for name, model in section.get("names", {}).items():
                if name != model:  # a model id is its own implicit deployment, not a resource
                    snap["deployment"][f"{home.name}/{name}"] = {"model": model, "run": None}
    return snap


def azure_snapshot(app: Any) -> Snapshot:
    """Azure emulator: Azure OpenAI files, jobs, models and deployments (ARM); AzureML jobs,
    registered models, data assets and serverless endpoints. Blobs are content-addressed
    uploads the SDK shares across runs (like Azure's LocalUpload folder) and are not counted."""
    snap = empty()
    with app.lock:
        store = app.store
        from cloudtune.emulators.azure._aoai import advance
        from cloudtune.emulators.azure._arm_ml import job_status

        for job_id in list(store.ft_jobs):
            advance(store, store.ft_jobs[job_id])
        for job_id, job in store.ft_jobs.items():
            snap["job"][job_id] = {"run": (job.get("metadata") or {}).get(RUN_TAG),
                                   "status": store.forced_status.get(job_id, job["status"])}
        for (ws, name), job in store.ml_jobs.items():
            tags = ((job.get("body") or {}).get("properties") or {}).get("tags") or {}
            snap["job"][f"{ws}/{name}"] = {"run": tags.get(RUN_TAG), "status": job_status(store, ws, job)}
        for file_id, item in store.files.items():
            snap["file"][file_id] = {"run": run_of_name(item.get("filename")), "name": item.get("filename"),
                                     "bytes": item.get("bytes")}
        for model, item in store.ft_models.items():
            if not item.get("deleted"):
                job = store.ft_jobs.get(item.get("job_id"), {})
                snap["model"][model] = {"run": (job.get("metadata") or {}).get(RUN_TAG)}
        for (ws, name, version), item in store.models.items():
            tags = ((item.get("body") or {}).get("properties") or {}).get("tags") or {}
            source = store.ml_jobs.get((ws, tags.get("sourceJob", "")), {})
            run = (((source.get("body") or {}).get("properties") or {}).get("tags") or {}).get(RUN_TAG)
            snap["model"][f"{ws}/{name}:{version}"] = {"run": run}
        for (account, name), dep in store.cs_deployments.items():
            tags = dep.get("tags") or {}
            model = dep.get("model")
            snap["deployment"][f"{account}/{name}"] = {"run": tags.get("cloudtune-run"), "model": model,
                                                       "deleting": dep.get("deleting_at") is not None}
        for (ws, name), endpoint in store.endpoints.items():
            body = endpoint.get("body") or {}
            tags = body.get("tags") or {}
            model = ((body.get("properties") or {}).get("modelSettings") or {}).get("modelId")
            snap["endpoint"][f"{ws}/{name}"] = {"run": tags.get("cloudtune-run"), "model": model,
                                                "deleting": endpoint.get("deleting_at") is not None}
        for (ws, name, version) in store.data:
            snap["data_asset"][f"{ws}/{name}:{version}"] = {"run": run_of_name(name)}
    return snap


def local_snapshot(homes: list[Path]) -> Snapshot:
    """Local provider: its records are on disk under each CLOUDTUNE_HOME/local (job dirs with
    spec.json, uploaded copies, adapters, deployment dirs)."""
    snap = empty()
    for home in homes:
        root = home / "local"
        for job_dir in sorted((root / "jobs").glob("*/spec.json")):
            spec = json.loads(job_dir.read_text())
            run = (spec.get("metadata") or {}).get("run_id")
            status = {}
            try:
                status = json.loads((job_dir.parent / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            snap["job"][job_dir.parent.name] = {"run": run, "status": status.get("status")}
            if (job_dir.parent / "adapter" / "adapter_config.json").is_file():
                snap["model"][f"local:{job_dir.parent.name}"] = {"run": run}
        for path in sorted((root / "files").glob("*.jsonl")):  # <file id>.jsonl
            snap["file"][path.stem] = {"run": run_of_name(path.name), "name": path.name}
        for path in sorted((root / "deployments").glob("*")):
            if path.is_dir():
                snap["deployment"][path.name] = {"run": None}
    return snap


def present(snap: Snapshot, kind: str) -> dict[str, dict[str, Any]]:
    """Resources of ``kind`` that still exist (a delete in progress counts as gone)."""
    return {key: info for key, info in snap[kind].items() if not info.get("deleting")}


def same_resource(ledger_id: str, emulator_key: str) -> bool:
    """Whether an id the ledger recorded names this emulator record. Emulator keys carry their
    scope (``account/name``, ``workspace/name:version``); ledger ids may carry ``azureml:``."""
    ledger_id = ledger_id.removeprefix("azureml:").strip("/")
    short = emulator_key.split("/", 1)[-1]
    if ledger_id in (emulator_key, short):
        return True
    if "/models/" in ledger_id or "/data/" in ledger_id:  # azureml://.../models/NAME/versions/V
        parts = ledger_id.split("/")
        ledger_id = f"{parts[-3]}:{parts[-1]}" if "versions" in parts else parts[-1]
    name, _, version = short.partition(":")
    return ledger_id in (short, name, f"{name}:{version}") or ledger_id.endswith("/" + short)
