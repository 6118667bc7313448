"""No secret reaches the user's screen, logs or disk: each secret shape is planted in the YAML config,
the environment and ``-o`` options (and echoed back by the emulator in a job's failure message and in
an injected 400 error), then
``cloudtune run`` is driven to success and to failure against ``cloudtune emulate openai`` and every
byte cloudtune printed or wrote under CLOUDTUNE_HOME (ledger and its WAL, logs, run directories) is
searched for each planted value."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulators import EmulatorProcess, control
from tests.support.cli_zygote import run_cloudtune
from tests.support.testenv import env_without
from tests.openai.conftest import write_training_file

ROOT = Path(__file__).resolve().parents[2]

# one planted value per shape; each must be masked wherever it would appear
API_KEY = "sk-proj-Pl4ntedK3y_0123456789abcdefXYZ"  # OPENAI_API_KEY, and the emulator's key
AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # AZURE_OPENAI_API_KEY: no shape, only its value is known
GITHUB_TOKEN = "ghp_" + "G1tHubT0kenPlanted0123456789abcdefgh"  # GITHUB_TOKEN
GHO = "gho_" + "0AuthT0kenPlanted0123456789abcdefghij"
GHS = "ghs_" + "S3rverT0kenPlanted0123456789abcdefghi"
GITHUB_PAT = "github_pat_11ABCDEFG0PlantedPat_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
URL_PASSWORD = "Url-Passw0rd-Planted"
BASIC = base64.b64encode(b"ci-robot:Basic-Passw0rd-Planted").decode()
BEARER = "Bearer-Token-Planted-0123456789"
SAS_SIG = "Planted%2BSasSignature%3D0123456789"
ACCOUNT_KEY = "Pl4ntedAcc0untKey+abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH=="  # AccountKey= in a connection string
SHARED_ACCESS_SIGNATURE = "sv=2024-05-04&ss=b&srt=co&sp=rl&sig=Pl4ntedSharedSasSig0123"
HEX_API_KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # "api-key: <hex>" header (Azure OpenAI's key header)
X_API_KEY = "Pl4ntedXApiKey0123456789"
QUERY_API_KEY = "Pl4ntedQueryApiKey0123456789"
FUNCTION_CODE = "Pl4ntedFunctionCode0123456789abc=="  # ?code= (Azure Functions keys)
HF_TOKEN = "hf_" + "Pl4ntedHuggingFaceToken0123456789ab"
AWS_KEY_ID = "AKIA" + "PL4NTED01234567Z"
AWS_SESSION_KEY_ID = "ASIA" + "PL4NTED01234567Y"
SK_KEY = "sk-" + "Pl4ntedOtherKey0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.Pl4ntedJwtSignature0123"
# values of environment variables no list names: any prefix, the name says KEY/TOKEN/SECRET/PASSWORD/
# CONNECTION_STRING/SAS; their values have no recognisable shape
HUB_TOKEN = "Pl4ntedHubT0kenValue0123"  # HUGGING_FACE_HUB_TOKEN
AD_TOKEN = "Pl4ntedAdT0kenValue4567"  # AZURE_OPENAI_AD_TOKEN
ADMIN_KEY = "Pl4ntedAdm1nKeyValue89"  # OPENAI_ADMIN_KEY
DB_PASSWORD = "Pl4nted-Db-Passw0rd"  # MYCORP_DB_PASSWORD
CONNECTION_STRING = "Pl4nted;Conn;Str1ng"  # WAREHOUSE_CONNECTION_STRING
SAS_VALUE = "Pl4ntedSasEnvValue01"  # EXPORT_SAS
SECRET_ENV = {
    "HUGGING_FACE_HUB_TOKEN": HUB_TOKEN, "AZURE_OPENAI_AD_TOKEN": AD_TOKEN, "OPENAI_ADMIN_KEY": ADMIN_KEY,
    "MYCORP_DB_PASSWORD": DB_PASSWORD, "WAREHOUSE_CONNECTION_STRING": CONNECTION_STRING, "EXPORT_SAS": SAS_VALUE,
}
SECRETS = {
    "sk-proj key": API_KEY, "azure key": AZURE_KEY, "ghp": GITHUB_TOKEN, "gho": GHO, "ghs": GHS,
    "github_pat": GITHUB_PAT, "url password": URL_PASSWORD, "basic": BASIC, "bearer": BEARER, "sas sig": SAS_SIG,
    "AccountKey": ACCOUNT_KEY, "SharedAccessSignature": "Pl4ntedSharedSasSig0123", "api-key header": HEX_API_KEY,
    "x-api-key": X_API_KEY, "?api-key=": QUERY_API_KEY, "code=": FUNCTION_CODE, "hf_": HF_TOKEN, "AKIA": AWS_KEY_ID,
    "ASIA": AWS_SESSION_KEY_ID, "sk-": SK_KEY, "jwt": JWT,
    **{f"${name}": value for name, value in SECRET_ENV.items()},
}
# every shape as a service would quote it in an error message
SHAPES_IN_TEXT = (
    f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net | "
    f"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature={SHARED_ACCESS_SIGNATURE} | "
    f"api-key: {HEX_API_KEY} | x-api-key: {X_API_KEY} | https://res.openai.azure.com/openai?api-version=1&api-key={QUERY_API_KEY} | "
    f"https://fn.azurewebsites.net/api/hook?name=a&code={FUNCTION_CODE} | {HF_TOKEN} | {AWS_KEY_ID} {AWS_SESSION_KEY_ID} | "
    f"{SK_KEY} | token={JWT} | " + " ".join(SECRET_ENV.values())
)


def _config(path: Path) -> Path:
    """A run config whose free-text fields carry every shape (metadata is user text: cloudtune must
    mask it in what it stores and prints, whatever the user puts there)."""
    metadata = {
        "repo": f"https://deploy:{URL_PASSWORD}@git.example.com/team/data.git",
        "auth_note": f"Authorization: Basic {BASIC}",
        "proxy": f"Bearer {BEARER}",
        "gh": GHO,
        "data_url": f"https://acct.blob.core.windows.net/c/train.jsonl?sv=2024-05-04&sr=b&sig={SAS_SIG}",
        "storage": f"AccountName=acct;AccountKey={ACCOUNT_KEY};SharedAccessSignature={SHARED_ACCESS_SIGNATURE}",
        "headers": f"api-key: {HEX_API_KEY} x-api-key={X_API_KEY} https://res.openai.azure.com/?api-key="
                   f"{QUERY_API_KEY} https://fn.azurewebsites.net/api/hook?code={FUNCTION_CODE}",
        "tokens": f"{HF_TOKEN} {AWS_KEY_ID} {AWS_SESSION_KEY_ID} {SK_KEY} {JWT} {HUB_TOKEN} {ADMIN_KEY}",
    }
    lines = ["provider: openai", "model: gpt-4o-mini", "train: train.jsonl", "metadata:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in metadata.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    with EmulatorProcess("openai", "--port", "0", "--job-duration", "1", "--api-key", API_KEY,
                         cwd=tmp_path) as process:
        yield process.url


def _cloudtune(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_without("CLOUDTUNE_", "OPENAI_", "AZURE_")
    env.update(CLOUDTUNE_HOME=str(tmp / "home"), OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=url + "/v1",
               AZURE_OPENAI_API_KEY=AZURE_KEY, GITHUB_TOKEN=GITHUB_TOKEN, CLOUDTUNE_POLL_INTERVAL="0.2",
               CLOUDTUNE_POLL_MAX="0.5", PYTHONPATH=str(ROOT), CI="1", **SECRET_ENV)
    return run_cloudtune(list(args), tmp, env, 120)


def _leaks(tmp: Path, *results: subprocess.CompletedProcess[str]) -> list[str]:
    """Every (where, shape) at which a planted secret is found in cloudtune's output or files."""
    found = []
    places = {f"stdout of {r.args[3:5]}": r.stdout.encode() for r in results}
    places.update({f"stderr of {r.args[3:5]}": r.stderr.encode() for r in results})
    for path in sorted((tmp / "home").rglob("*")):
        if path.is_file():
            places[str(path.relative_to(tmp))] = path.read_bytes()
    assert any("ledger.sqlite" in name for name in places), sorted(places)
    for where, data in places.items():
        for shape, secret in SECRETS.items():
            if secret.encode() in data:
                found.append(f"{shape} in {where}")
    return found


def test_no_planted_secret_is_printed_or_stored_by_a_successful_run(tmp_path: Path, emulator: str) -> None:
    write_training_file(tmp_path / "train.jsonl")
    (tmp_path / "eval.jsonl").write_text((tmp_path / "train.jsonl").read_text().split("\n", 3)[0] + "\n")
    config = _config(tmp_path / "run.yaml")
    run = _cloudtune(tmp_path, emulator, "run", str(config), "--json", "--eval", "eval.jsonl",
                     "-o", f"organization={GHS}", "-o", f"project={GITHUB_PAT}")
    assert run.returncode == 0, run.stderr
    run_id = json.loads(run.stdout.strip().splitlines()[-1])["run_id"]
    shown = [_cloudtune(tmp_path, emulator, *args) for args in
             (("status", run_id, "--json"), ("status", run_id), ("list",), ("list", "--json"))]
    cleaned = _cloudtune(tmp_path, emulator, "cleanup", run_id, "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    assert _leaks(tmp_path, run, cleaned, *shown) == []


def test_no_planted_secret_is_printed_or_stored_by_a_failed_run(tmp_path: Path, emulator: str) -> None:
    write_training_file(tmp_path / "train.jsonl")
    config = _config(tmp_path / "run.yaml")
    # the service's failure message quotes what it was sent: every shape, and the raw key values
    message = (f"Could not fetch https://ci:{URL_PASSWORD}@data.example.com (Authorization: Basic {BASIC}; "
               f"Authorization: Bearer {BEARER}); key {API_KEY} / {AZURE_KEY}; token {GITHUB_TOKEN} {GHO} {GHS} "
               f"{GITHUB_PAT}; https://a.blob.core.windows.net/c?sv=1&sig={SAS_SIG}; " + SHAPES_IN_TEXT)
    control(emulator, "/_emulator/faults", [{"kind": "fail_job", "stage": "running", "code": "data_fetch_failed",
                                             "message": message}])
    failed = _cloudtune(tmp_path, emulator, "run", str(config), "--json", "--cleanup", "on-failure")
    assert failed.returncode == 1, failed.stderr
    plain = _cloudtune(tmp_path, emulator, "status")
    assert "data_fetch_failed" in failed.stdout + failed.stderr  # the failure itself is still reported
    assert "***" in failed.stdout + failed.stderr
    # a provider option with credentials in the URL: the request is refused, the URL never shown as given
    refused = _cloudtune(tmp_path, emulator, "run", str(config), "--no-deploy",
                         "-o", f"base_url={emulator.replace('://', f'://robot:{URL_PASSWORD}@')}/v1")
    assert refused.returncode != 0
    # a base_url carrying its key as a query parameter: whatever the outcome, the key is never shown or stored
    keyed = _cloudtune(tmp_path, emulator, "run", str(config), "--no-deploy", "--json",
                       "-o", f"base_url={emulator}/v1?api-key={QUERY_API_KEY}")
    assert _leaks(tmp_path, failed, plain, refused, keyed) == []


def test_no_planted_secret_leaks_from_a_service_error(tmp_path: Path, emulator: str) -> None:
    """A 400 from the service whose message quotes every shape and every secret variable's value."""
    write_training_file(tmp_path / "train.jsonl")
    config = _config(tmp_path / "run.yaml")
    message = f"Invalid request: could not use {SHAPES_IN_TEXT}; Authorization: Bearer {BEARER}; key {AZURE_KEY}"
    control(emulator, "/_emulator/faults", [{"route": "POST /v1/fine_tuning/jobs", "status": 400,
                                             "code": "invalid_request", "message": message}])
    failed = _cloudtune(tmp_path, emulator, "run", str(config), "--json", "--cleanup", "on-failure",
                        "-o", f"organization={HF_TOKEN}")
    assert failed.returncode not in (0, 1), failed.stderr  # refused as the service's error, not a crash
    assert "invalid_request" in failed.stdout + failed.stderr or "Invalid request" in failed.stdout + failed.stderr
    assert "***" in failed.stdout + failed.stderr
    shown = [_cloudtune(tmp_path, emulator, *args) for args in (("status", "--json"), ("status",), ("list", "--json"))]
    assert _leaks(tmp_path, failed, *shown) == []
