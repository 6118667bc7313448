"""What a path given as a data file really is, when it is not a regular file.

cloudtune reads a training file several times (validation, token counts, the upload, a retry),
so it needs a regular file: a directory, a named pipe, ``/dev/stdin``, a device or a socket
cannot be read twice, and a symlink loop or a dangling link cannot be read at all. Each gets
its own words instead of "does not exist".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_STDIN_NAMES = {"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0", "-"}


def not_a_regular_file(path: str | os.PathLike[str]) -> str | None:
    """None for a regular file (through symlinks); otherwise what ``path`` is, as the end of a
    sentence starting with the path ("is a directory", "is a named pipe (FIFO) ...")."""
    text = os.fspath(path)
    if text in _STDIN_NAMES:
        return "is standard input; cloudtune reads the data more than once, so save it to a file first"
    try:
        info = os.stat(text)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back at itself)"
        if os.path.islink(text):
            return f"is a symbolic link to {os.readlink(text)}, which does not exist"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a directory)"
        if exc.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        return "does not exist"
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return ("is a named pipe (FIFO), which can be read only once; cloudtune reads the data more than "
                "once, so save it to a file first")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        where = " (standard input)" if Path(text).resolve() == Path("/dev/stdin").resolve() else ""
        return f"is a device{where}, not a file; save the data to a file first"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"
