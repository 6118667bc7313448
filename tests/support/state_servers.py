"""Real servers for the shared state backends, started on loopback for the test session.

- PostgreSQL: Debian's ``postgresql`` package (``scripts/setup.sh`` installs it). ``initdb`` refuses
  to run as root, so as root the cluster is made and started as the ``postgres`` user, in a
  temporary directory that user owns; each test gets a fresh database.
- Azure Blob: Azurite, Microsoft's storage emulator (npm ``azurite``, installed by setup.sh).

Missing software is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Azurite's documented development account (public, fixed; learn.microsoft.com "Use Azurite")
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class MissingServer(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MissingServer(f"{what} exited at start ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise MissingServer(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g}s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise MissingServer(f"PostgreSQL's {name} is not installed: run scripts/setup.sh "
                            "(or apt-get install -y postgresql) - the state tests need a real server.")
    return found


class PostgresServer:
    """``initdb`` + ``postgres`` on a free loopback port; trust auth for the ``postgres`` role."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cloudtune-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _run_kwargs(self) -> dict[str, object]:
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    def start(self) -> "PostgresServer":
        initdb = postgres_bin("initdb")
        subprocess.run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync", "--no-instructions"], check=True, capture_output=True, cwd=self.root,
                       **self._run_kwargs())  # type: ignore[arg-type]
        log = open(self.log, "wb")  # noqa: SIM115 - the server writes it for its whole life
        self.process = subprocess.Popen(
            [postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", "fsync=off", "-c", "full_page_writes=off",
             "-c", "synchronous_commit=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **self._run_kwargs())  # type: ignore[arg-type]
        _wait_for_port(self.port, self.process, "postgres", self.log)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # fast shutdown: ends every session
        shutil.rmtree(self.root, ignore_errors=True)


class AzuriteServer:
    """Azurite's blob service on a free loopback port, data in a temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cloudtune-azurite-"))
        self.port = free_port()
        self.log = self.root / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "AzuriteServer":
        binary = shutil.which("azurite-blob") or shutil.which("azurite-blob", path="node_modules/.bin")
        if not binary:
            raise MissingServer("Azurite is not installed: run scripts/setup.sh (or npm install -g azurite) - "
                                "the Azure Blob state tests need the real storage emulator.")
        log = open(self.log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.root / "data"),
             "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        _wait_for_port(self.port, self.process, "azurite", self.log)
        return self

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")

    def new_url(self, **settings: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        return f"azblob://{AZURITE_ACCOUNT}/c{secrets.token_hex(6)}/state" + (f"?{query}" if query else "")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


_SHARED: dict[str, object] = {}


def shared_postgres() -> PostgresServer:
    """One PostgreSQL for the whole process (pytest session or ``python -m tests.faults``), stopped at exit."""
    if "postgres" not in _SHARED:
        import atexit

        server = PostgresServer().start()
        atexit.register(server.stop)
        _SHARED["postgres"] = server
    return _SHARED["postgres"]  # type: ignore[return-value]


def shared_azurite() -> AzuriteServer:
    """One Azurite for the whole process, stopped at exit."""
    if "azurite" not in _SHARED:
        import atexit

        server = AzuriteServer().start()
        atexit.register(server.stop)
        _SHARED["azurite"] = server
    return _SHARED["azurite"]  # type: ignore[return-value]
