"""A file validated in byte ranges on several processes gives the report of one pass."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from cloudtune.dataset._parallel import split_ranges, worker_count

from .conftest import chat_example


def validate_file(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Validate in a freshly started interpreter, as the CLI does. Ranges are only forked
    from a process with no other thread, and a long pytest session has threads left over
    by other tests' servers and SDK pollers, which would quietly turn this into one pass."""
    code = (
        "import pickle, sys\n"
        "from cloudtune.dataset import validate_file\n"
        "args, kwargs = pickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.buffer.write(pickle.dumps(validate_file(*args, **kwargs)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((args, kwargs)), capture_output=True,
                          check=True)
    return pickle.loads(done.stdout)


# Every line is interesting, so whatever line a range starts or ends at, it
# starts or ends at a problem: a duplicate of a line in an earlier range, of
# the line before, invalid JSON, a blank line, bad UTF-8, a line too long, a
# special token, an example with no assistant, an example too long for the
# context, CRLF endings.
_KINDS = 11


def _line(i: int) -> bytes:
    kind = i % _KINDS
    if kind == 0:
        return json.dumps(chat_example(10 ** 6)).encode()  # the example of line 1, again and again
    if kind == 1:
        return json.dumps(chat_example(i)).encode() + b"\r"  # CRLF
    if kind == 2:
        return json.dumps(chat_example(i - 1)).encode()  # repeats the line before (LF here, CRLF there)
    if kind == 3:
        return b'{"messages": [{"role": "user", "content": "unterminated'
    if kind == 4:
        return b""
    if kind == 5:
        return json.dumps({"messages": [{"role": "user", "content": f"only a question {i}"}]}).encode()
    if kind == 6:
        return b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'
    if kind == 7:
        return json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode()  # > max_line_bytes
    if kind == 8:
        return json.dumps(chat_example(i, turns=2) | {"extra": i}).encode()
    if kind == 9:
        row = chat_example(i)
        row["messages"][1]["content"] = f"<|endoftext|> {i}"
        return json.dumps(row).encode()
    row = chat_example(i)
    row["messages"][2]["content"] = "word " * 400 + str(i)  # long, distinct, under max_line_bytes
    return json.dumps(row).encode()


def _write(path, n: int, *, bom: bool = False, head: bytes = b"") -> None:
    with open(path, "wb") as handle:
        handle.write((b"\xef\xbb\xbf" if bom else b"") + head)
        for i in range(n):
            handle.write(_line(i) + b"\n")


def _report(path, workers: int, problems_per_code: int = 7, **kwargs):
    return validate_file(path, model="gpt-4o-mini", max_line_bytes=2500, problems_per_code=problems_per_code,
                         workers=workers, **kwargs)


def test_split_ranges_cut_after_newlines_and_cover_the_file(tmp_path):
    path = tmp_path / "data.jsonl"
    _write(path, 500)
    data = path.read_bytes()
    for parts in (2, 3, 7, 50):
        ranges = split_ranges(path, len(data), parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(data[start - 1:start] == b"\n" for start, _ in ranges[1:])
        assert len(ranges) == parts
    assert split_ranges(path, len(data), 10_000)[-1][1] == len(data)  # never more ranges than lines
    assert len(split_ranges(path, len(data), 10_000)) <= 500


@pytest.mark.parametrize("workers", [2, 3, 5, 8])
def test_parallel_report_equals_one_pass(tmp_path, workers):
    path = tmp_path / "data.jsonl"
    _write(path, 700)
    serial = _report(path, 1)
    parallel = _report(path, workers)
    assert serial.processes == {"training": 1}
    assert parallel.processes == {"training": workers}
    assert parallel.to_dict() == serial.to_dict()  # 7 problems kept per code: those of the first range
    everything = _report(path, 1, problems_per_code=10_000)
    assert _report(path, workers, problems_per_code=10_000).to_dict() == everything.to_dict()
    assert len(everything.problems) > 600  # every line's problems, from every range, at its line
    # And one pass is right in itself, not merely equal: exact line numbers, the
    # first line of a repeated example, the counts of every kind of line.
    counts = serial.problem_counts
    n = 700
    per_kind = [len(range(k, n, _KINDS)) for k in range(_KINDS)]
    assert counts["invalid_json"] == per_kind[3]
    assert counts["blank_line"] == per_kind[4]
    assert counts["invalid_utf8"] == per_kind[6]
    assert counts["line_too_long"] == per_kind[7]
    assert counts["duplicate_example"] == (per_kind[0] - 1) + per_kind[2]
    dup = [(p.line, p.message) for p in serial.problems if p.code == "duplicate_example"]
    assert dup[:3] == [(3, "same example as line 2"), (12, "same example as line 1"), (14, "same example as line 13")]
    assert [p.line for p in serial.problems if p.code == "invalid_json"] == [i + 1 for i in range(3, 80, _KINDS)][:7]
    stats = serial.stats["training"]
    assert stats["lines"] == n and stats["line_endings"] == "mixed"
    assert stats["duplicates"] == counts["duplicate_example"]


def test_duplicates_across_ranges_point_at_the_first_line_in_the_file(tmp_path):
    # The same example at the start and at the end: the end is another range.
    path = tmp_path / "data.jsonl"
    rows = [chat_example(i) for i in range(400)] + [chat_example(0), chat_example(399), chat_example(0)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    serial, parallel = _report(path, 1), _report(path, 4)
    assert parallel.processes == {"training": 4}
    assert parallel.to_dict() == serial.to_dict()
    assert [(p.line, p.message) for p in parallel.problems if p.code == "duplicate_example"] == [
        (401, "same example as line 1"), (402, "same example as line 400"), (403, "same example as line 1")]


def test_validation_leak_with_ranges(tmp_path):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("".join(json.dumps(chat_example(i)) + "\n" for i in range(300)))
    valid.write_text("".join(json.dumps(chat_example(i)) + "\n" for i in (1000, 5, 1001, 299, 1002) * 20))
    serial = validate_file(train, validation_path=valid, model="gpt-4o-mini", workers=1)
    parallel = validate_file(train, validation_path=valid, model="gpt-4o-mini", workers=3)
    assert parallel.processes == {"training": 3, "validation": 3}
    assert parallel.to_dict() == serial.to_dict()
    leaks = [p for p in parallel.problems if p.code == "validation_leak"]
    assert leaks[0].line == 2 and "training line 6" in leaks[0].message
    assert parallel.problem_counts["validation_leak"] == 40


def test_file_start_checks_stay_with_the_first_range(tmp_path):
    bom = tmp_path / "bom.jsonl"
    _write(bom, 300, bom=True)
    for provider in ("openai", "azure", "local"):
        one = validate_file(bom, provider=provider, workers=1, max_line_bytes=2500)
        many = validate_file(bom, provider=provider, workers=3, max_line_bytes=2500)
        assert many.to_dict() == one.to_dict()
    # A file that opens a pretty-printed object: a single pass stops there, so
    # the other ranges must not add anything.
    pretty = tmp_path / "pretty.jsonl"
    _write(pretty, 300, head=b"{\n")
    one, many = _report(pretty, 1), _report(pretty, 4)
    assert many.to_dict() == one.to_dict()
    assert "pretty_printed_json" in many.problem_counts and many.stats["training"]["lines"] == 1


def test_a_first_range_of_blank_lines_falls_back_to_one_pass(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n" * 5000 + b"[\n" + b"".join(json.dumps(chat_example(i)).encode() + b"\n" for i in range(50)))
    one, many = _report(path, 1), _report(path, 4)
    assert many.processes == {"training": 1}  # the first range cannot judge the start of the file
    assert many.to_dict() == one.to_dict()
    assert "json_array_not_jsonl" in one.problem_counts


def test_default_workers_depend_on_size(monkeypatch):
    monkeypatch.delenv("CLOUDTUNE_VALIDATE_WORKERS", raising=False)
    assert worker_count(10 * 1024 * 1024, None) == 1  # small: one pass
    assert worker_count(10, 3) == 3  # asked for: as asked
    monkeypatch.setenv("CLOUDTUNE_VALIDATE_WORKERS", "1")
    assert worker_count(10 ** 10, None) == 1
    monkeypatch.setenv("CLOUDTUNE_VALIDATE_WORKERS", "4")
    assert worker_count(10 ** 10, None) == 4
    assert worker_count(40 * 1024 * 1024, None) == 2  # at least 16 MB a process


def test_fingerprint_tables_absorb_a_later_range():
    from cloudtune.dataset._fingerprints import FingerprintTable

    first, later = FingerprintTable(capacity=4), FingerprintTable(capacity=4)
    for line, value in enumerate(range(100, 3100), start=1):
        first.add(hash(("row", value)), line)
    for line, value in enumerate(range(3000, 6000), start=1):  # 100 repeat the first table's last rows
        later.add(hash(("row", value)), line)
    repeated = first.absorb(later.entries(), 3000)
    assert sorted(line for line, _ in repeated) == list(range(1, 101))
    assert len(first) == 5900
    assert first.get(hash(("row", 3000))) == 2901  # an entry already there keeps its line
    assert first.get(hash(("row", 3100))) == 3000 + 101  # a new one gets the later range's line, shifted
    assert first.get(hash(("row", 5999))) == 6000


def _range_result(lines: int, *, fatal: str | None = None):
    from cloudtune.dataset._fingerprints import FingerprintTable
    from cloudtune.dataset._parallel import RangeResult
    from cloudtune.dataset._problems import ProblemSink
    from cloudtune.dataset._reader import FileFacts
    from cloudtune.dataset._stats import FileStats

    facts = FileFacts(lines=lines, content_seen=True, fatal=fatal)
    table = FingerprintTable()
    for line in range(1, lines + 1):
        table.add(hash(("line", line, lines)), line)
    return RangeResult(sink=ProblemSink(), stats=FileStats(), facts=facts, fingerprints=table)


def _children() -> set[int]:
    """Pids whose parent is this process, zombies (exited, not waited for) included."""
    import os
    from pathlib import Path

    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def no_child_left_behind():
    """Fails the test if run_ranges left a child, running or unreaped. Compared with the children
    this process had before: a long pytest session has others (servers started by other tests)."""
    before = _children()
    yield
    assert _children() - before == set()


def test_run_ranges_collects_every_child_and_reaps_it(no_child_left_behind):
    from cloudtune.dataset._parallel import run_ranges

    ranges = [(0, 10), (10, 20), (20, 30)]
    results = run_ranges(ranges, lambda start, end: _range_result(start + 5))
    assert [r.facts.lines for r in results] == [5, 15, 25]
    assert [len(r.fingerprints[0]) for r in results[1:]] == [15, 25]  # entries arrived intact


@pytest.mark.parametrize("failure", ["raises", "dies", "fatal"])
def test_a_failing_child_means_one_pass(failure, no_child_left_behind):
    import os

    from cloudtune.dataset._parallel import run_ranges

    def scan_range(start, end):
        if start == 20:
            if failure == "raises":
                raise RuntimeError("bug")
            if failure == "dies":
                os._exit(9)  # as if killed, nothing written
            return _range_result(3, fatal="file_unreadable")
        return _range_result(3)

    assert run_ranges([(0, 10), (10, 20), (20, 30)], scan_range) is None


def test_a_fatal_first_range_stops_the_children(no_child_left_behind):
    import time

    from cloudtune.dataset._parallel import run_ranges

    def scan_range(start, end):
        if start:
            time.sleep(60)  # would hold the test for a minute if it were waited for
        return _range_result(1, fatal="pretty_printed_json" if start == 0 else None)

    began = time.monotonic()
    results = run_ranges([(0, 10), (10, 20)], scan_range)
    assert [r.facts.fatal for r in results] == ["pretty_printed_json"]
    assert time.monotonic() - began < 30


def test_validation_file_forks_after_a_threaded_training_scan(tmp_path, monkeypatch):
    # tiktoken counts on threads; those threads must be gone before forking.
    monkeypatch.setenv("CLOUDTUNE_TOKEN_COUNTER", "tiktoken")
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"messages": [
        {"role": "user", "content": " ".join(words[(i + j) % 10] + str(j) for j in range(80 + i % 50))},
        {"role": "assistant", "content": f"answer {i}"}]} for i in range(800)]
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    # The training file opens with more blank lines than the rest of it: its
    # first range holds no content, so it is scanned in one pass, on threads.
    body = "".join(json.dumps(row) + "\n" for row in rows)
    train.write_text("\n" * (len(body) + 10) + body)
    valid.write_text("".join(json.dumps(row) + "\n" for row in rows[::-4]))
    one = validate_file(train, validation_path=valid, model="gpt-4o-mini", workers=1, token_threads=2)
    many = validate_file(train, validation_path=valid, model="gpt-4o-mini", workers=2, token_threads=2)
    assert many.processes == {"training": 1, "validation": 2}
    assert many.to_dict() == one.to_dict()
    assert many.problem_counts["validation_leak"] == 200
