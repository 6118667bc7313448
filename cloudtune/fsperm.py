"""Files and directories only their owner can read, whatever the umask.

cloudtune keeps the user's training data (split files, upload copies, local job data), the ledger
and run records under CLOUDTUNE_HOME. The user's own file may be 0600; a copy of it must not be
0644 because the umask said so. Every helper here sets the mode explicitly after creating, so a
permissive umask (0o022, 0o002) changes nothing, and an existing file is tightened too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | os.PathLike[str], *, tighten_existing: bool = True) -> Path:
    """``path`` as a directory readable by its owner only (parents are made with default modes).

    An existing directory is tightened when it is ours to tighten: owned by this user and either
    empty or already holding cloudtune's ledger - never a directory of the user's that merely
    happens to be named (``CLOUDTUNE_HOME=.``)."""
    directory = Path(path)
    try:
        directory.mkdir(mode=PRIVATE_DIR)
        created = True
    except FileExistsError:
        created = False
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        # once more, not recursively: where a parent exists and the child still cannot be made
        # (/proc, a read-only mount) the error must come out, not a RecursionError
        directory.mkdir(mode=PRIVATE_DIR)
        created = True
    if created:
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    elif tighten_existing and _ours(directory):
        os.chmod(directory, PRIVATE_DIR)
    return directory


def home_directory(path: Path, variable: str = "CLOUDTUNE_HOME") -> Path:
    """``path`` as cloudtune's private home, or a clear ConfigError (exit 2) naming it: a file, a
    path under a file, or a place no directory can be made (``/proc``) is not a home."""
    from cloudtune import errors

    hint = f"Point {variable} at a directory you can write (default ~/.cloudtune)."
    if path.exists() and not path.is_dir():
        raise errors.ConfigError(f"{variable} {path} is a file, not a directory.", hint=hint)
    try:
        return private_dir(path)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise errors.ConfigError(f"{variable} {path} cannot be used as cloudtune's home: "
                                 f"{exc.strerror or exc}{where}.", hint=hint) from None


def _ours(directory: Path) -> bool:
    info = directory.stat()
    if info.st_mode & 0o077 == 0 or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        return False
    return (directory / "ledger.sqlite3").exists() or not any(directory.iterdir())


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make an existing file ``path`` owner-only; a missing one is created empty, owner-only."""
    target = Path(path)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    os.chmod(target, PRIVATE_FILE)
    return target


def open_private(path: str | os.PathLike[str], mode: str = "wb") -> IO[bytes]:
    """``open(path, mode)`` for writing ("wb" or "ab"), the file owner-only from its first byte."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    descriptor = os.open(path, flags, PRIVATE_FILE)
    if hasattr(os, "fchmod"):
        os.fchmod(descriptor, PRIVATE_FILE)  # an existing file keeps its old mode through O_CREAT
    else:
        os.chmod(path, PRIVATE_FILE)
    return os.fdopen(descriptor, mode)


def write_private(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` (replacing it), owner-only."""
    with open_private(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def copy_private(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy the bytes of ``source`` to ``target``, owner-only (``shutil.copyfile`` takes the umask's mode)."""
    with open(source, "rb") as data, open_private(target) as out:
        shutil.copyfileobj(data, out, 1 << 20)
    return Path(target)
