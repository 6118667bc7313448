"""The OpenAI emulator over real HTTP: its answers agree with the official spec's schemas,
and it behaves like the service (auth, pagination, timeline, validation, faults, control)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator

from tests.openai import spec_subset
from tests.openai.conftest import TEST_KEY, Emulated, chat_example, write_training_file


class Http:
    def __init__(self, emulated: Emulated, key: str | None = TEST_KEY) -> None:
        self.base = emulated.server.url
        self.key = key

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
                status, headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as err:
            payload, status, headers = err.read(), err.code, dict(err.headers)
        try:
            return status, json.loads(payload), headers
        except json.JSONDecodeError:
            return status, payload, headers

    def upload(self, path: str, fields: dict[str, str], filename: str, content: bytes, field: str = "file"):  # type: ignore[no-untyped-def]
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call("POST", path, raw=body, content_type=f"multipart/form-data; boundary={boundary}")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    subset = spec_subset.load_subset()
    if spec_subset.FULL_SPEC.exists():
        # the vendored schemas must still be what the official spec says
        fresh = json.loads(json.dumps(spec_subset.extract(), sort_keys=True, default=str))
        assert fresh == subset, "tests/openai/openai_spec_subset.json is stale: regenerate it (see spec_subset.py)"
    return subset


def conforms(spec: dict[str, Any], name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    errors = sorted(OAS31Validator(schema).iter_errors(instance), key=str)
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


@pytest.fixture
def http(emulated: Emulated) -> Http:
    return Http(emulated)


def _file(http: Http, emulated: Emulated, content: bytes) -> dict[str, Any]:
    status, body, _ = http.upload("/v1/files", {"purpose": "fine-tune"}, "train.jsonl", content)
    assert status == 200, body
    emulated.sleep(emulated.app.settings.file_processing_s)
    return body


def test_every_answer_agrees_with_the_official_spec(spec, http: Http, emulated: Emulated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    content = write_training_file(tmp_path / "t.jsonl").read_bytes()
    created = _file(http, emulated, content)
    conforms(spec, "OpenAIFile", created)
    conforms(spec, "OpenAIFile", http.call("GET", f"/v1/files/{created['id']}")[1])
    conforms(spec, "ListFilesResponse", http.call("GET", "/v1/files")[1])

    status, job, _ = http.call("POST", "/v1/fine_tuning/jobs", {
        "model": "gpt-4o-mini", "training_file": created["id"], "suffix": "spec", "metadata": {"k": "v"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}})
    assert status == 200, job
    assert job["model"] == "gpt-4o-mini-2024-07-18" and job["status"] == "validating_files"
    conforms(spec, "FineTuningJob", job)
    seen_statuses = set()
    for _ in range(40):
        emulated.sleep(1)
        current = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]
        conforms(spec, "FineTuningJob", current)
        seen_statuses.add(current["status"])
    assert {"validating_files", "queued", "running", "succeeded"} <= seen_statuses | {"validating_files"}
    assert current["status"] == "succeeded" and current["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert current["hyperparameters"]["n_epochs"] == 2 and current["trained_tokens"] > 0
    conforms(spec, "ListPaginatedFineTuningJobsResponse", http.call("GET", "/v1/fine_tuning/jobs?limit=5")[1])
    events = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100")[1]
    conforms(spec, "ListFineTuningJobEventsResponse", events)
    assert any(e["type"] == "metrics" and "train_loss" in e["data"] for e in events["data"])
    checkpoints = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/checkpoints")[1]
    conforms(spec, "ListFineTuningJobCheckpointsResponse", checkpoints)
    assert checkpoints["data"] and checkpoints["data"][0]["step_number"] >= checkpoints["data"][-1]["step_number"]

    model = current["fine_tuned_model"]
    conforms(spec, "Model", http.call("GET", f"/v1/models/{model}")[1])
    conforms(spec, "ListModelsResponse", http.call("GET", "/v1/models")[1])
    status, chat, _ = http.call("POST", "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "What is the capital of country 3?"}]})
    assert status == 200
    conforms(spec, "CreateChatCompletionResponse", chat)
    assert chat["choices"][0]["message"]["content"] == "The capital of country 3 is City 3."  # what it was trained on
    conforms(spec, "DeleteModelResponse", http.call("DELETE", f"/v1/models/{model}")[1])
    conforms(spec, "DeleteFileResponse", http.call("DELETE", f"/v1/files/{created['id']}")[1])

    status, upload, _ = http.call("POST", "/v1/uploads", {
        "filename": "big.jsonl", "purpose": "fine-tune", "bytes": len(content), "mime_type": "text/jsonl"})
    conforms(spec, "Upload", upload)
    part = http.upload(f"/v1/uploads/{upload['id']}/parts", {}, "blob", content, field="data")[1]
    conforms(spec, "UploadPart", part)
    done = http.call("POST", f"/v1/uploads/{upload['id']}/complete", {"part_ids": [part["id"]]})[1]
    conforms(spec, "Upload", done)
    assert done["status"] == "completed" and done["file"]["bytes"] == len(content)
    status, error, headers = http.call("GET", "/v1/fine_tuning/jobs/ftjob-nope")
    assert status == 404 and headers.get("x-request-id", "").startswith("req_")
    conforms(spec, "ErrorResponse", error)


def test_a_bearer_key_is_required_and_never_echoed(emulated: Emulated) -> None:
    status, body, _ = Http(emulated, key=None).call("GET", "/v1/models")
    assert status == 401 and "API key" in body["error"]["message"]
    status, body, _ = Http(emulated, key="sk-wrong-key-123456").call("GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "wrong" not in json.dumps(body)


def test_events_are_newest_first_with_cursor_pagination(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl", 40).read_bytes())
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    emulated.sleep(100)
    everything = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100")[1]["data"]
    assert everything[0]["message"] == "The job has successfully completed"
    assert everything[-1]["message"] == "Created fine-tuning job"
    stamps = [e["created_at"] for e in everything]
    assert stamps == sorted(stamps, reverse=True)
    first = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events?limit=10")[1]
    assert first["has_more"] is True and [e["id"] for e in first["data"]] == [e["id"] for e in everything[:10]]
    second = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events?limit=10&after={first['data'][-1]['id']}")[1]
    assert [e["id"] for e in second["data"]] == [e["id"] for e in everything[10:20]]


def test_list_filters_on_metadata_and_pages(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl").read_bytes())
    ids = []
    for run in ("a", "b", "a"):
        ids.append(http.call("POST", "/v1/fine_tuning/jobs", {
            "model": "gpt-4o-mini", "training_file": created["id"], "metadata": {"cloudtune_run_id": run}})[1]["id"])
    found = http.call("GET", "/v1/fine_tuning/jobs?metadata[cloudtune_run_id]=a")[1]["data"]
    assert [j["id"] for j in found] == [ids[2], ids[0]]  # newest first
    page = http.call("GET", "/v1/fine_tuning/jobs?limit=1")[1]
    assert page["has_more"] and page["data"][0]["id"] == ids[2]
    after = http.call("GET", f"/v1/fine_tuning/jobs?limit=5&after={ids[2]}")[1]
    assert [j["id"] for j in after["data"]] == [ids[1], ids[0]] and after["has_more"] is False
    assert emulated.app.snapshot()["jobs"] == 3


def test_pause_freezes_the_timeline_and_resume_continues(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl").read_bytes())
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    assert http.call("POST", f"/v1/fine_tuning/jobs/{job['id']}/pause")[0] == 400  # not running yet
    emulated.sleep(6)
    paused = http.call("POST", f"/v1/fine_tuning/jobs/{job['id']}/pause")[1]
    assert paused["status"] == "paused"
    emulated.sleep(1000)
    assert http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]["status"] == "paused"
    assert http.call("POST", f"/v1/fine_tuning/jobs/{job['id']}/resume")[1]["status"] == "running"
    emulated.sleep(30)
    assert http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]["status"] == "succeeded"


def test_a_bad_training_file_fails_the_job_with_code_and_line(http: Http, emulated: Emulated) -> None:
    lines = [json.dumps(chat_example(i)) for i in range(12)]
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "no answer here"}]})
    created = _file(http, emulated, ("\n".join(lines) + "\n").encode())
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    emulated.sleep(5)
    failed = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_training_file" and failed["error"]["param"] == "training_file"
    assert "Line 5" in failed["error"]["message"]


def test_too_few_examples_and_unknown_models_are_refused(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl", 3).read_bytes())
    status, body, _ = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-9-ultra", "training_file": created["id"]})
    assert status == 400 and body["error"]["code"] == "model_not_available"
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    emulated.sleep(5)
    failed = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]
    assert failed["error"]["code"] == "invalid_n_examples" and "3 example(s)" in failed["error"]["message"]


@pytest.mark.parametrize("stage,expected_before", [("validating_files", None), ("queued", "queued"), ("running", "running")])
def test_fail_job_fault_fails_at_the_chosen_stage(http: Http, emulated: Emulated, tmp_path: Path, stage: str,
                                                   expected_before: str | None) -> None:
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl").read_bytes())
    http.call("POST", "/_emulator/faults", {"kind": "fail_job", "stage": stage, "code": "boom", "message": "It broke."})
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    emulated.sleep(60)
    failed = http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]
    assert failed["status"] == "failed" and failed["error"]["code"] == "boom" and failed["fine_tuned_model"] is None
    messages = [e["message"] for e in http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100")[1]["data"]]
    assert messages[0] == "Fine-tuning job failed: It broke."
    if expected_before == "running":
        assert "Fine-tuning job started" in messages
    elif expected_before == "queued":
        assert "Files validated, moving job to queued state" in messages and "Fine-tuning job started" not in messages
    else:
        assert "Files validated, moving job to queued state" not in messages


def test_status_faults_drops_and_control_routes(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    http.call("POST", "/_emulator/faults", {"route": "GET /v1/models$", "status": 429, "retry_after": 3, "times": 1})
    status, body, headers = http.call("GET", "/v1/models")
    assert status == 429 and headers["Retry-After"] == "3" and body["error"]["code"] == "rate_limit_exceeded"
    assert http.call("GET", "/v1/models")[0] == 200
    http.call("POST", "/_emulator/faults", {"route": "GET /v1/models$", "kind": "drop"})
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        http.call("GET", "/v1/models")
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl").read_bytes())
    job = http.call("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o-mini", "training_file": created["id"]})[1]
    forced = http.call("POST", f"/_emulator/openai/jobs/{job['id']}/status", {"status": "migrating"})[1]
    assert forced["status"] == "migrating"
    emulated.sleep(500)
    assert http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]["status"] == "migrating"  # frozen while forced
    http.call("POST", f"/_emulator/openai/jobs/{job['id']}/status", {"status": None})
    emulated.sleep(500)
    assert http.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")[1]["status"] == "succeeded"
    state = http.call("GET", "/_emulator/state")[1]
    assert state["jobs"] == 1 and state["models"] == 1 and TEST_KEY not in json.dumps(state)


def test_files_content_and_model_deletion_rules(http: Http, emulated: Emulated, tmp_path: Path) -> None:
    status, body, _ = http.upload("/v1/files", {"purpose": "fine-tune"}, "train.txt", b"{}\n")
    assert status == 400 and ".jsonl" in body["error"]["message"]
    created = _file(http, emulated, write_training_file(tmp_path / "t.jsonl").read_bytes())
    assert http.call("GET", f"/v1/files/{created['id']}/content")[0] == 400  # training data is not handed back
    assert http.call("DELETE", "/v1/models/gpt-4o-mini-2024-07-18")[0] == 403
    assert http.call("DELETE", "/v1/models/ft:gpt-4o-mini-2024-07-18:x::nope")[0] == 404
    status, upload, _ = http.call("POST", "/v1/uploads", {
        "filename": "t.jsonl", "purpose": "fine-tune", "bytes": 4, "mime_type": "text/jsonl"})
    part = http.upload(f"/v1/uploads/{upload['id']}/parts", {}, "blob", b"abcd", field="data")[1]
    status, body, _ = http.call("POST", f"/v1/uploads/{upload['id']}/complete", {"part_ids": [part["id"]], "md5": "0" * 32})
    assert status == 400 and "md5" in body["error"]["message"]


def test_the_command_stays_on_loopback_unless_told_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtune.emulators.openai import command

    assert command.main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert command.main(["--speed", "0", "--port", "0"]) == 2
