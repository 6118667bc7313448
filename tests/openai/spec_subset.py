"""The part of OpenAI's official OpenAPI spec the emulator answers with, vendored.

The full spec (``../shared/specs/openai-openapi.yaml``, 3 MB) is not part of the
repository, so the schemas the tests validate against - and every schema they
reference - are extracted into ``openai_spec_subset.json`` next to this file.
Regenerate with ``python -m tests.openai.spec_subset [path/to/openai-openapi.yaml]``;
the tests check the vendored copy still equals a fresh extraction whenever the
full spec is present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT_SCHEMAS = (
    "FineTuningJob", "FineTuningJobEvent", "FineTuningJobCheckpoint", "ListPaginatedFineTuningJobsResponse",
    "ListFineTuningJobEventsResponse", "ListFineTuningJobCheckpointsResponse", "OpenAIFile", "ListFilesResponse",
    "DeleteFileResponse", "Upload", "UploadPart", "Model", "ListModelsResponse", "DeleteModelResponse",
    "CreateChatCompletionResponse", "CreateFineTuningJobRequest", "CompleteUploadRequest", "CreateUploadRequest",
    "ErrorResponse",
)
SUBSET_PATH = Path(__file__).with_name("openai_spec_subset.json")
FULL_SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "openai-openapi.yaml"
PREFIX = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX):])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def extract(spec_path: Path = FULL_SPEC) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(spec_path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe loader
    schemas = spec["components"]["schemas"]
    wanted, todo = {}, list(ROOT_SCHEMAS)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted[name] = schemas[name]
        todo.extend(_refs(schemas[name]) - set(wanted))
    return {"openapi": spec["openapi"], "info": {"version": spec["info"]["version"]},
            "components": {"schemas": dict(sorted(wanted.items()))}}


def load_subset() -> dict[str, Any]:
    return json.loads(SUBSET_PATH.read_text())


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else FULL_SPEC
    SUBSET_PATH.write_text(json.dumps(extract(source), indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {SUBSET_PATH} ({SUBSET_PATH.stat().st_size} bytes)")
