"""Deployment names for OpenAI, which has no deployments.

OpenAI serves a fine-tuned model as soon as its job succeeds, under the model id.
cloudtune's interface speaks of named deployments (the pipeline records them,
``undeploy`` removes them, ``delete-model`` undeploys first), so this provider
keeps the names itself, in a small JSON file under ``CLOUDTUNE_HOME``, per API
endpoint:

* ``deploy(model, name)`` records ``name -> model`` (nothing is sent to OpenAI);
* a fine-tuned model id is also its own implicit deployment for ``get_deployment``
  (``managed_by_cloudtune`` false) until ``undeploy`` hides it; it is not *listed*,
  because it is no separate resource: only deleting the model ends it, and
  listing it would make every model look deployed outside cloudtune;
* ``undeploy`` forgets the name; the model keeps serving until ``delete_model``.

Nothing secret is stored: names, model ids and the base URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_path() -> Path:
    home = Path(os.environ.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune").expanduser()
    return home / "openai" / "deployments.json"


class DeploymentNames:
    def __init__(self, path: Path, endpoint: str) -> None:
        self.path = path
        self.endpoint = endpoint

    @contextlib.contextmanager
    def _locked(self, write: bool) -> Iterator[dict[str, Any]]:
        """The endpoint's section, under an inter-process lock; written back if ``write``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                try:
                    everything = json.loads(self.path.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    everything = {}
                section = everything.setdefault(self.endpoint, {"names": {}, "hidden": []})
                yield section
                if write:
                    handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".deployments.")
                    with os.fdopen(handle, "w") as out:
                        json.dump(everything, out, indent=1, sort_keys=True)
                    os.replace(temp, self.path)  # atomic: a crash never leaves half a file
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def model_for(self, name: str) -> str | None:
        with self._locked(write=False) as section:
            return section["names"].get(name)

    def names(self) -> dict[str, str]:
        with self._locked(write=False) as section:
            return dict(section["names"])

    def is_hidden(self, model: str) -> bool:
        with self._locked(write=False) as section:
            return model in section["hidden"]

    def add(self, name: str, model: str) -> None:
        with self._locked(write=True) as section:
            section["names"][name] = model
            if name == model:
                section["hidden"] = [m for m in section["hidden"] if m != model]

    def remove(self, name: str) -> bool:
        """Forget a name (or hide a model's implicit deployment); False if there was nothing."""
        with self._locked(write=True) as section:
            if section["names"].pop(name, None) is not None:
                return True
            if name.startswith("ft:") and name not in section["hidden"]:
                section["hidden"].append(name)
                return True
            return False

    def forget_model(self, model: str) -> None:
        with self._locked(write=True) as section:
            section["names"] = {n: m for n, m in section["names"].items() if m != model}
            section["hidden"] = [m for m in section["hidden"] if m != model]
