"""Where cloudtune keeps its runs and run locks, chosen by one setting.

``CLOUDTUNE_STATE`` (or ``--state URL`` before the command, or ``state:`` in a run's config):

- ``sqlite:///PATH`` - the default, ``CLOUDTUNE_HOME/ledger.sqlite3`` with ``flock`` (one machine);
- ``postgresql://user@host:port/db`` - tables + session advisory locks (``pip install 'cloudtune[postgres]'``);
- ``azblob://ACCOUNT/CONTAINER[/PREFIX]`` - one JSON blob per run + blob leases (``cloudtune[azure]``).

Every backend is a :class:`StateStore`; the core never names one. A process opens each state
once (:func:`open_state` caches it): a PostgreSQL lock lives as long as its connection, so the
command's locks and writes share it until :func:`close_states` at the command's end.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cloudtune import errors
from cloudtune.state.base import (
    SCHEMA_VERSION,
    LockHolder,
    StateSettings,
    StateStore,
    StepRecord,
    Unreadable,
    cloudtune_home,
    describe_unreadable,
    new_run_id,
    this_machine,
)

__all__ = ["SCHEMA_VERSION", "LockHolder", "StateStore", "StepRecord", "Unreadable", "close_states",
           "cloudtune_home", "connect_state", "describe_unreadable", "new_run_id", "open_state", "this_machine", "redacted_url", "state_url"]

BACKENDS = {
    "sqlite": ("cloudtune.state.sqlite:SQLiteStore", "built in"),
    "postgresql": ("cloudtune.state.postgres:PostgresStore", "pip install 'cloudtune[postgres]'"),
    "postgres": ("cloudtune.state.postgres:PostgresStore", "pip install 'cloudtune[postgres]'"),
    "azblob": ("cloudtune.state.azblob:BlobStore", "pip install 'cloudtune[azure]'"),
}

_OPEN: dict[str, StateStore] = {}


def state_url() -> str:
    """The state this process uses: CLOUDTUNE_STATE, else the SQLite ledger in CLOUDTUNE_HOME."""
    url = os.environ.get("CLOUDTUNE_STATE", "").strip()
    return url or f"sqlite:///{cloudtune_home() / 'ledger.sqlite3'}"


def redacted_url(url: str) -> str:
    """The URL without a password or query secrets, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return parts._replace(query="").geturl()


def open_state(url: str | None = None) -> StateStore:
    """The store at ``url`` (default :func:`state_url`), opened once per process."""
    url = url or state_url()
    store = _OPEN.get(url)
    if store is None:
        store = _OPEN[url] = _open(url)
    return store


def connect_state(url: str) -> StateStore:
    """A new store at ``url``, not shared with the rest of the process (tests, ``state migrate``)."""
    return _open(url)


def close_states() -> None:
    """Close every store this process opened (releasing any lock still held)."""
    while _OPEN:
        _, store = _OPEN.popitem()
        try:
            store.close()
        except Exception:  # noqa: BLE001 - closing at exit: the backend drops what it held anyway
            pass


def _open(url: str) -> StateStore:
    import importlib

    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in BACKENDS:
        raise errors.ConfigError(
            f"CLOUDTUNE_STATE={redacted_url(url)!r} names no known state backend.",
            hint="Use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or azblob://ACCOUNT/CONTAINER[/PREFIX].")
    target, install = BACKENDS[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ProviderUnavailable(
            f"The {scheme} state backend needs a package that is not installed ({exc.name or exc}).",
            hint=install) from None
    cls = getattr(module, class_name)
    if scheme == "sqlite":
        path = url[len("sqlite://"):]
        return cls(Path(path) if path else None)
    return cls.from_url(url, StateSettings(dict(parse_qsl(urlsplit(url).query))))
