"""Read a JSONL file line by line with bounded memory, whatever its bytes.

The reader never holds more than one line (and never more than
``max_line_bytes`` of it): an over-long line is skipped in chunks and reported
by length. It notices the things a JSON parser would choke on before the
parser sees them: a UTF-8 byte-order mark, UTF-16 text, binary data, CRLF line
endings, blank lines, a file that is one JSON array or one pretty-printed
object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

UTF8_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 8192
_READ_BUFFER = 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 32 * 1024 * 1024  # far beyond any model context; parsing more is pointless


@dataclass
class FileFacts:
    """What the reader learnt about the file as a whole."""

    size_bytes: int = 0
    bom: bool = False
    crlf_lines: int = 0
    lf_lines: int = 0
    lines: int = 0
    blank_lines: int = 0
    array_lines: int = 0  # lines holding a JSON array of objects (set by the validator)
    content_seen: bool = False  # a non-blank line was read (a range that saw none cannot judge the file's start)
    # Set when the reader stopped early because the whole file is unusable.
    fatal: str | None = None  # binary_file | utf16_file | json_array_not_jsonl | pretty_printed_json
    fatal_detail: str = ""

    @property
    def line_endings(self) -> str:
        if self.crlf_lines and self.lf_lines:
            return "mixed"
        return "crlf" if self.crlf_lines else "lf"


class Line(NamedTuple):  # a tuple: one is made per line, and a tuple is the cheapest object to make
    number: int  # 1-based
    data: bytes | None  # None when the line was too long to keep
    length: int = 0


def _sniff(head: bytes, facts: FileFacts) -> bool:
    """Decide from the first bytes whether the file can be read as JSONL at all."""
    looks_utf16 = len(head) >= 4 and (
        (head[1:4:2] == b"\x00\x00" and head[0] != 0 and head[2] != 0)
        or (head[0:4:2] == b"\x00\x00" and head[1] != 0 and head[3] != 0)
    )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or looks_utf16:
        facts.fatal = "utf16_file"
        facts.fatal_detail = "UTF-16/UTF-32 text; save the file as UTF-8"
        return False
    if b"\x00" in head:
        facts.fatal = "binary_file"
        offset = head.index(b"\x00")
        facts.fatal_detail = f"NUL byte at offset {offset}; this is not a text file"
        return False
    return True


def sniff_file(path: Path) -> bool:
    """True when the file's first bytes can be read as UTF-8 JSONL at all."""
    with open(path, "rb") as handle:
        return _sniff(handle.read(_SNIFF_BYTES), FileFacts())


def iter_lines(path: Path, facts: FileFacts, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, *,
               start: int = 0, end: int | None = None) -> Iterator[Line]:
    """Yield each line (without its line ending), updating ``facts``.

    ``start``/``end`` read one byte range of the file (``start`` at the
    beginning of a line, ``end`` just after a newline, as ``split_ranges``
    makes them); line numbers then count from the range's first line, and the
    checks that only make sense at the start of the file (encoding sniffing,
    byte-order mark, one JSON array, pretty-printed JSON) are left to the
    range that starts at 0.

    Raises ``OSError`` only for a file that cannot be opened or read at all.
    """
    # A large buffer: lines of a few kB through the default 8 kB buffer cost
    # twice the time in readline.
    with open(path, "rb", buffering=_READ_BUFFER) as handle:
        facts.size_bytes = _size(handle)
        if start == 0:
            if not _sniff(handle.read(_SNIFF_BYTES), facts):
                return
        handle.seek(start)
        position, stop = start, (end if end is not None else float("inf"))
        number = 0
        first_content_seen = start > 0
        while position < stop:
            chunk = handle.readline(max_line_bytes + 1)
            if not chunk:
                break
            number += 1
            length = len(chunk)
            position += length
            too_long = length > max_line_bytes and not chunk.endswith(b"\n")
            if too_long:
                # Skip the rest of this line a chunk at a time; keep only its length.
                start_of_line = chunk[:64]
                chunk = None
                while True:
                    more = handle.readline(1024 * 1024)
                    length += len(more)
                    position += len(more)
                    if not more or more.endswith(b"\n"):
                        ended_crlf = more.endswith(b"\r\n")
                        break
                facts.lines += 1
                if ended_crlf:
                    facts.crlf_lines += 1
                else:
                    facts.lf_lines += 1
                if number == 1 and start == 0 and start_of_line.startswith(UTF8_BOM):
                    facts.bom = True
                    start_of_line = start_of_line[len(UTF8_BOM):]
                if not first_content_seen and start_of_line.lstrip().startswith(b"["):
                    facts.fatal = "json_array_not_jsonl"
                    facts.fatal_detail = "the file starts with '[' (one JSON array)"
                    return
                first_content_seen = facts.content_seen = True
                yield Line(number, None, length)
                continue
            facts.lines += 1
            if chunk.endswith(b"\r\n"):
                facts.crlf_lines += 1
                chunk = chunk[:-2]
            elif chunk.endswith(b"\n"):
                facts.lf_lines += 1
                chunk = chunk[:-1]
            if number == 1 and start == 0 and chunk.startswith(UTF8_BOM):
                facts.bom = True
                chunk = chunk[len(UTF8_BOM):]
            stripped = chunk.strip()
            if not stripped:
                facts.blank_lines += 1
                yield Line(number, b"", length)
                continue
            facts.content_seen = True
            if not first_content_seen:
                first_content_seen = True
                # A pretty-printed array ("[" then objects on the next lines) cannot be read
                # line by line at all; a one-line array is parsed and reported by the validator.
                if stripped.startswith(b"[") and (stripped == b"[" or not stripped.endswith(b"]")):
                    facts.fatal = "json_array_not_jsonl"
                    facts.fatal_detail = "the file starts with '[': it is one JSON array; write one object per line"
                    return
                if stripped == b"{" or (stripped.startswith(b"{") and stripped.endswith(b",")):
                    facts.fatal = "pretty_printed_json"
                    facts.fatal_detail = "line 1 opens a JSON object that continues on the next lines"
                    return
            yield Line(number, chunk, length)


def _size(handle) -> int:
    import os

    try:
        return os.fstat(handle.fileno()).st_size
    except OSError:
        return 0
