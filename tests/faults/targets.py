"""The services a fault scenario runs against, each started once per session.

* ``openai``: the OpenAI emulator (``cloudtune emulate openai``'s app) in this process on a
  loopback port; the CLI subprocesses reach it over real HTTP through the openai SDK.
* ``azure-openai`` / ``azure-serverless``: one Azure emulator (``cloudtune emulate azure``'s app
  and HTTPS proxy) shared by both routes: a ``gpt-*`` model takes the Azure OpenAI route, a
  ``Phi-*`` model the serverless (AzureML) route.
* ``local``: the local provider (detached worker processes; its records are on disk).

Running the emulators in-process lets the checks read their complete records (file names, job
metadata, ARM tags) under the app's lock; faults go in over the same HTTP control routes a CI
dry run uses. Emulator clocks run fast (real time x speed) so a whole job takes about a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults import records

ROOT = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-faults-emulator-key-0123456789"
OPENAI_BASE_MODEL = "gpt-4o-mini"
AZURE_OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
AZURE_SERVERLESS_MODEL = "Phi-4-mini-instruct"
# OpenAI emulator timeline (emulated seconds at speed 1): about 1.5 s from create to success.
OPENAI_TIMINGS = {"validate_s": 0.3, "queue_s": 0.2, "run_s": 1.0, "file_processing_s": 0.2}
AZURE_SPEED = 50.0  # emulated seconds per real second
AZURE_TIMELINE = {"validating_s": 5.0, "queued_s": 5.0, "running_s": 20.0, "deploy_s": 10.0, "delete_s": 5.0}


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback control: never proxied


def post(url: str, path: str, body: Any, method: str = "POST") -> Any:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with _opener().open(request, timeout=10) as response:
        return json.loads(response.read())


def get(url: str, path: str) -> Any:
    with _opener().open(url + path, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Target:
    name: str
    service: str  # openai | azure | local
    control_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    app: Any = None
    model: str = ""
    extra_run_args: tuple[str, ...] = ()

    # ------------------------------------------------------------- faults
    def faults(self, *faults: dict[str, Any]) -> None:
        """Arm faults through the emulator's HTTP control route (POST /_emulator/faults)."""
        assert self.control_url, f"{self.name} has no emulator to inject faults into"
        post(self.control_url, "/_emulator/faults", list(faults))

    def clear_faults(self) -> None:
        if self.control_url:
            post(self.control_url, "/_emulator/faults", {}, method="DELETE")

    def hits(self) -> list[str]:
        return get(self.control_url, "/_emulator/faults")["hits"] if self.control_url else []

    def requests(self) -> list[str]:
        with self.app.lock:
            return list(self.app.request_log)

    # ------------------------------------------------------------- timing knobs
    def set_timings(self, **changes: float) -> None:
        """Emulated durations for jobs/deployments created next (restored by ``reset``)."""
        if self.service == "openai":
            post(self.control_url, "/_emulator/openai/settings", changes)
        elif self.service == "azure":
            post(self.control_url, "/_emulator/config", {"timeline": changes})

    def set_rules(self, **rules: Any) -> None:
        post(self.control_url, "/_emulator/config", {"rules": rules})

    def hold_jobs(self) -> None:
        """Jobs created from now on keep training until ``release_jobs`` (status, events and the
        model stay consistent, as on the service: nothing is masked)."""
        if self.service == "openai":
            self.set_timings(run_s=100000.0)
        elif self.service == "azure":
            self.set_timings(running_s=100000.0)

    def release_jobs(self) -> None:
        """Let held jobs finish within the next half second: the rest of an OpenAI job's plan is
        brought forward in order (events stay monotonic, the clock is not skewed for anyone
        else); Azure jobs follow the restored timeline."""
        if self.service == "openai":
            self.set_timings(**OPENAI_TIMINGS)
            with self.app.lock:
                now = self.app.clock.now()
                for job in self.app.jobs.values():
                    remaining = job.plan[job.next_entry:]
                    if job.status in ("succeeded", "failed", "cancelled") or not remaining:
                        continue
                    elapsed = job.active_elapsed(now)
                    for index, entry in enumerate(remaining, start=1):
                        entry.offset = min(entry.offset, elapsed + 0.5 * index / len(remaining))
        elif self.service == "azure":
            self.set_timings(running_s=AZURE_TIMELINE["running_s"])

    def fail_job(self, job_key: str, message: str, code: str = "invalidTrainingFile") -> None:
        """Make an Azure job fail now, as the service would (terminal, with an error; no model)."""
        with self.app.lock:
            store = self.app.store
            if job_key in store.ft_jobs:
                job = store.ft_jobs[job_key]
                job.update(status="failed", finished_at=int(self.app.now),
                           error={"code": code, "message": message, "param": "training_file"})
                # the service says so in the job's events too (pollers follow the events)
                job["events"].append({"object": "fine_tuning.job.event", "id": f"ftevent-{uuid.uuid4().hex}",
                                      "created_at": int(self.app.now), "level": "error", "message": message,
                                      "type": "message", "data": None})
            else:
                store.forced_status[job_key.split("/", 1)[-1]] = "Failed"

    def reset(self) -> None:
        self.clear_faults()
        if self.service == "openai":
            self.set_timings(**OPENAI_TIMINGS)
        elif self.service == "azure":
            self.set_timings(**AZURE_TIMELINE)
            self.set_rules(deployment_capacity_quota=500, max_finetuned_deployments=5)

    # ------------------------------------------------------------- records
    def snapshot(self, homes: list[Path]) -> records.Snapshot:
        if self.service == "openai":
            return records.openai_snapshot(self.app, homes)
        if self.service == "azure":
            snap = records.azure_snapshot(self.app)
            route_kinds = {"azure-openai": ("job", "file", "model", "deployment"),
                           "azure-serverless": ("job", "model", "endpoint", "data_asset")}[self.name]
            return {kind: (items if kind in route_kinds else {}) for kind, items in snap.items()}
        return records.local_snapshot(homes)

    def run_args(self, data: Path, validation_split: bool = True) -> list[str]:
        if self.service == "local":
            # the local trainer's knobs live in the YAML config (hyperparameters.extra)
            config = data.parent / f"{data.stem}.run.yaml"
            config.write_text(f"provider: local\nmodel: {self.model}\ntrain: {data}\ndeploy: false\nseed: 3\n"
                              "hyperparameters:\n  epochs: 6\n  batch_size: 4\n"
                              "  extra: {learning_rate: 0.003, max_seq_len: 64, lora_r: 4, lora_alpha: 8, "
                              "checkpoint_every: 2}\n")
            return ["run", str(config), "--json"]
        args = ["run", "--provider", self.service, "--model", self.model, "--train", str(data), "--json"]
        if self.name == "azure-serverless" and validation_split:
            args += ["--validation-split", "0.2"]  # serverless fine-tuning needs validation data
        return [*args, *self.extra_run_args]


class Targets:
    """Lazily started emulators, shared by every scenario of a session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._made: dict[str, Target] = {}
        self._stops: list[Any] = []
        self._lock = threading.RLock()

    def get(self, name: str) -> Target:
        with self._lock:
            if name not in self._made:
                self._made[name] = getattr(self, "_start_" + name.replace("-", "_"))()
            return self._made[name]

    def _start_openai(self) -> Target:
        from cloudtune.emulators._http import EmulatorClock
        from cloudtune.emulators.openai import EmulatorSettings, OpenAIEmulator, serve

        app = OpenAIEmulator(EmulatorSettings(api_key=OPENAI_KEY, **OPENAI_TIMINGS), clock=EmulatorClock(speed=1.0))
        server = serve(app).start()
        self._stops.append(server.stop)
        env = {"OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": OPENAI_KEY}
        return Target("openai", "openai", server.url, env, app, OPENAI_BASE_MODEL)

    def _azure(self) -> tuple[Any, dict[str, str]]:
        if "_azure" not in self._made:
            from cloudtune.emulators._http import EmulatorClock
            from cloudtune.emulators.azure import AzureEmulator, Timeline

            emulator = AzureEmulator(clock=EmulatorClock(speed=AZURE_SPEED), timeline=Timeline(**AZURE_TIMELINE),
                                     state_dir=self.workdir / "azure-emulator")
            emulator.start()
            self._stops.append(emulator.stop)
            self._made["_azure"] = Target("_azure", "azure", emulator.url, emulator.env(), emulator.app)
        shared = self._made["_azure"]
        return shared.app, shared.env

    def _start_azure_openai(self) -> Target:
        app, env = self._azure()
        return Target("azure-openai", "azure", self._made["_azure"].control_url, env, app, AZURE_OPENAI_MODEL)

    def _start_azure_serverless(self) -> Target:
        app, env = self._azure()
        return Target("azure-serverless", "azure", self._made["_azure"].control_url, env, app, AZURE_SERVERLESS_MODEL)

    def _start_local(self) -> Target:
        from local_backend.tiny import build_tiny_model

        texts = [json.dumps(example(i)) for i in range(20)]
        model = build_tiny_model(self.workdir / "tiny-model", texts, hidden_size=64, intermediate_size=128, layers=2)
        env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        return Target("local", "local", None, env, None, str(model))

    def close(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):  # a stop failing must not hide the matrix result
                stop()


def example(i: int) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": "You answer capital-city questions."},
        {"role": "user", "content": f"What is the capital of country {i}?"},
        {"role": "assistant", "content": f"The capital of country {i} is City {i}."},
    ]}


def write_training(path: Path, count: int = 20) -> Path:
    path.write_text("".join(json.dumps(example(i)) + "\n" for i in range(count)))
    os.chmod(path, 0o600)
    return path
