"""Validate one large file on several cores: byte ranges, one process each,
merged so that the report is the one a single pass gives.

Why processes: the work is Python (JSON decoding, the rules) and a token
counter that holds the GIL, so threads cannot share it out. Why only for
large files: a process costs a fork and a pickled result; below
``MIN_RANGE_BYTES`` per range one pass is as fast.

How the result stays exact:

* Ranges start at the beginning of a line and end just after a newline, so
  no line is split. Each range numbers its lines from 1; the merge shifts
  them by the number of lines in the ranges before it.
* Checks about the start of the file (encoding, byte-order mark, one JSON
  array, pretty-printed JSON) belong to the first range; when it stops the
  file (a fatal problem) the other ranges are dropped, as a single pass
  would never have read them. A first range without any content cannot judge
  the start of the file: the caller then makes one pass.
* Problems merge in range order, keeping the first N of each code, as the
  single pass keeps them (``ProblemSink.merge``).
* Duplicates need the whole file: each range returns its table of first
  occurrences and the lines that repeat an example of the same range; the
  merge turns a range's first occurrence of an example seen in an earlier
  range into a duplicate too, and points every duplicate at the first line in
  the file. The example fingerprints are Python's ``hash`` of the line's
  bytes, salted per process: the workers are forked, so they share the salt.
* Statistics are sums and value histograms; they add up exactly.

Memory stays bounded per process, as in one pass: each holds one line, its
caches and the fingerprint table of its range.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from array import array
from dataclasses import dataclass, field

from ._fingerprints import FingerprintTable
from ._problems import WARNING, ProblemSink
from ._reader import FileFacts
from ._stats import FileStats

# Below this much data per process, forking and merging cost more than they save.
MIN_RANGE_BYTES = 16 * 1024 * 1024
_MAX_WORKERS = 8
_FIND_NEWLINE_BLOCK = 1024 * 1024


@dataclass
class RangeResult:
    """Everything one range's scan found, with line numbers local to the range."""

    sink: ProblemSink
    stats: FileStats
    facts: FileFacts
    # First occurrences in this range, as a table (the first range, kept in this
    # process) or as its bare entries (a worker's, smaller to send back).
    fingerprints: FingerprintTable | tuple[array, array]
    repeat_lines: array = field(default_factory=lambda: array("Q"))  # lines repeating an example of this range
    repeat_keys: array = field(default_factory=lambda: array("Q"))  # ... and that example's fingerprint key


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(size_bytes: int, requested: int | None, min_range_bytes: int = MIN_RANGE_BYTES) -> int:
    """Processes to use for a file of ``size_bytes``; 1 means one pass.

    ``requested`` is used as given (the caller knows best, tests use small
    files). Otherwise: ``CLOUDTUNE_VALIDATE_WORKERS`` or one per available
    core (at most 8), but never ranges smaller than ``min_range_bytes``."""
    if requested is not None:
        return max(1, requested)
    override = os.environ.get("CLOUDTUNE_VALIDATE_WORKERS", "").strip()
    wanted = int(override) if override.isdigit() else min(_MAX_WORKERS, available_cores())
    return max(1, min(wanted, size_bytes // max(1, min_range_bytes)))


def can_fork() -> bool:
    """Forking is only safe while this process runs no other thread (a lock
    held by a thread at the fork stays held forever in the child), and only
    where fork exists."""
    return hasattr(os, "fork") and threading.active_count() == 1


def split_ranges(path, size_bytes: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges of about equal size covering the file, each
    starting at a line start and ending just after a newline (the last at
    the end of the file). Fewer when the file has fewer lines."""
    cuts = [0]
    with open(path, "rb") as handle:
        for index in range(1, parts):
            target = max(size_bytes * index // parts, cuts[-1])
            cut = _next_line_start(handle, target, size_bytes)
            if cut >= size_bytes:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
    cuts.append(size_bytes)
    return list(zip(cuts[:-1], cuts[1:]))


def _next_line_start(handle, target: int, size_bytes: int) -> int:
    """The first offset >= ``target`` that begins a line."""
    if target == 0:
        return 0
    handle.seek(target - 1)
    position = target - 1
    while position < size_bytes:
        block = handle.read(_FIND_NEWLINE_BLOCK)
        if not block:
            break
        found = block.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(block)
    return size_bytes


def run_ranges(ranges, scan_range) -> list[RangeResult] | None:
    """``scan_range(start, end) -> RangeResult`` for every range: the first in
    this process, the others in forked children at the same time. ``None`` when
    a child failed (the caller then makes one pass, which reports properly).

    Plain ``os.fork`` and a pipe per child rather than ``multiprocessing``:
    its import alone costs tens of milliseconds and a few MB in every process
    that validates a large file, and nothing here needs more than fork,
    write, read and wait."""
    children: list[tuple[int, object]] = []  # (pid, read end)
    results: list[RangeResult] = []
    try:
        for start, end in ranges[1:]:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the caller's stack
                os.close(read_fd)
                for _, earlier in children:
                    earlier.close()
                _child(scan_range, start, end, write_fd)
            os.close(write_fd)
            children.append((pid, os.fdopen(read_fd, "rb")))
        results.append(scan_range(*ranges[0]))
        if results[0].facts.fatal or not results[0].facts.content_seen:
            return results if results[0].facts.fatal else None
        # Grow the first range's table (the file's, after the merge) to its
        # expected final size now, before the workers' entries arrive.
        first_bytes, all_bytes = ranges[0][1] - ranges[0][0], ranges[-1][1] - ranges[0][0]
        results[0].fingerprints.reserve(len(results[0].fingerprints) * all_bytes // max(1, first_bytes))
        for _, stream in children:
            try:
                status, payload = pickle.load(stream)
                if status == "ok":
                    payload.fingerprints = _read_entries(stream, payload.fingerprints)
            except (EOFError, OSError, pickle.UnpicklingError):
                return None  # the child died (killed, out of memory)
            if status != "ok" or payload.facts.fatal:  # e.g. a read error: one pass reports it in place
                return None
            results.append(payload)
        return results
    finally:
        for pid, stream in children:
            stream.close()  # a child still writing gets EPIPE and exits
        delivered = max(0, len(results) - 1)  # children whose whole result was read
        for index, (pid, _) in enumerate(children):
            _reap(pid, kill=index >= delivered)


def _child(scan_range, start: int, end: int, write_fd: int) -> None:
    code = 1
    try:
        with os.fdopen(write_fd, "wb") as stream:
            entries = None
            try:
                scanned = scan_range(start, end)
                entries = scanned.fingerprints.entries()
                scanned.fingerprints = len(entries[0])  # the entries follow as raw bytes
                result = ("ok", scanned)
            except BaseException as exc:  # noqa: BLE001 - tell the parent, which falls back to one pass
                result = ("error", f"{type(exc).__name__}: {exc}")
            pickle.dump(result, stream, protocol=pickle.HIGHEST_PROTOCOL)
            if entries is not None:
                for column in entries:
                    stream.write(memoryview(column).cast("B"))
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no buffers of the parent's flushed twice


def _read_entries(stream, count: int) -> tuple[array, array]:
    """A worker's fingerprint entries, read straight into arrays: the parent
    holds them once, with no pickle or bytes copy beside them."""
    keys, lines = array("Q", bytes(8 * count)), array("I", bytes(4 * count))
    for column in (keys, lines):
        view = memoryview(column).cast("B")
        filled = 0
        while filled < len(view):
            got = stream.readinto(view[filled:])
            if not got:
                raise EOFError("short fingerprint entries")
            filled += got
    return keys, lines


def _reap(pid: int, *, kill: bool) -> None:
    """Wait for a child; first kill it if its result is not wanted (the
    parent stopped early), since it would only finish work nobody reads."""
    try:
        if kill:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass


def merge_ranges(results: list[RangeResult], *, label: str, sink: ProblemSink, stats: FileStats,
                 facts: FileFacts) -> FingerprintTable:
    """Fold the ranges' results, in file order, into one file's sink, stats
    and facts (see the module docstring); returns the file's fingerprint table."""
    fingerprints = results[0].fingerprints  # the first range's lines are the file's lines
    offset = 0
    for index, result in enumerate(results):
        sink.merge(result.sink, offset)
        stats.merge(result.stats)
        _merge_facts(facts, result.facts)
        # Examples that repeat: within this range, and first occurrences here of
        # an example an earlier range already holds. Reported in line order.
        repeats = list(zip(result.repeat_lines, result.repeat_keys))
        if index:
            repeats += fingerprints.absorb(result.fingerprints, offset)
            result.fingerprints = None  # absorbed: let it go
        repeats.sort()
        for line, key in repeats:
            stats.duplicates += 1
            sink.add(label, line + offset, "$", "duplicate_example", WARNING,
                     duplicate_message(fingerprints.get(key)))
        offset += result.facts.lines
    return fingerprints


def duplicate_message(first_line: int) -> str:
    return f"same example as line {first_line}"


def _merge_facts(into: FileFacts, part: FileFacts) -> None:
    into.size_bytes = max(into.size_bytes, part.size_bytes)
    into.bom = into.bom or part.bom
    into.crlf_lines += part.crlf_lines
    into.lf_lines += part.lf_lines
    into.lines += part.lines
    into.blank_lines += part.blank_lines
    into.array_lines += part.array_lines
    into.content_seen = into.content_seen or part.content_seen
    if part.fatal and not into.fatal:
        into.fatal, into.fatal_detail = part.fatal, part.fatal_detail
