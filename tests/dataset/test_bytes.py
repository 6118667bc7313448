"""Whatever the bytes, validate_file reports; it never raises."""

from __future__ import annotations

import json
import tracemalloc

from cloudtune.dataset import validate_file

from .conftest import chat_example, codes, problem

BOM = b"\xef\xbb\xbf"


def test_valid_file_is_usable(write_jsonl, valid_rows):
    report = validate_file(write_jsonl(valid_rows), model="gpt-4o-mini-2024-07-18")
    assert report.ok, report.render()
    assert report.error_count == 0
    assert report.stats["training"]["examples"] == 12
    assert report.stats["training"]["usable_examples"] == 12


def test_empty_file(write_jsonl):
    report = validate_file(write_jsonl([]))
    assert not report.ok
    p = problem(report, "empty_file")
    assert (p.line, p.path, p.severity) == (0, "$", "error")
    assert report.estimate is None


def test_whitespace_only_file_is_empty(write_jsonl):
    report = validate_file(write_jsonl(["", "   ", "\t"]))
    assert "empty_file" in codes(report)
    assert "blank_line" in codes(report)


def test_missing_file_and_directory(tmp_path):
    missing = validate_file(tmp_path / "nope.jsonl")
    assert not missing.ok and codes(missing) == {"file_unreadable"}
    directory = validate_file(tmp_path)
    assert not directory.ok and "file_unreadable" in codes(directory)


def test_binary_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 100)
    report = validate_file(path)
    assert codes(report) == {"binary_file"}
    assert problem(report, "binary_file").line == 0


def test_utf16_file(tmp_path):
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(json.dumps(chat_example()).encode("utf-16"))
    report = validate_file(path)
    assert codes(report) == {"utf16_file"}
    path.write_bytes(json.dumps(chat_example()).encode("utf-16-le"))  # no BOM: sniffed from the NULs
    assert codes(validate_file(path)) == {"utf16_file"}


def test_invalid_utf8_reported_and_scan_goes_on(write_jsonl, valid_rows):
    rows = list(valid_rows)
    rows.insert(3, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}')
    report = validate_file(write_jsonl(rows))
    p = problem(report, "invalid_utf8")
    assert p.line == 4 and p.severity == "error"
    assert report.stats["training"]["examples"] == 12  # the other lines were still read


def test_one_file_for_every_provider_the_bom_is_a_note(write_jsonl, valid_rows):
    with_bom = write_jsonl(valid_rows, "bom.jsonl", prefix=BOM)
    without = write_jsonl(valid_rows, "plain.jsonl")

    openai = validate_file(with_bom, provider="openai")
    assert openai.ok, openai.render()  # the upload copy drops the BOM: nothing to refuse
    assert "bom_adjusted" in codes(openai, "note") and problem(openai, "bom_adjusted").line == 1
    assert "without it" in problem(openai, "bom_adjusted").message
    assert openai.stats["training"]["bom"] is True
    assert openai.stats["training"]["examples"] == 12  # the BOM did not break line 1
    assert ": note [bom_adjusted]" in openai.render()

    local = validate_file(with_bom, provider="local")
    assert local.ok and local.stats["training"]["bom"] is True and "bom_adjusted" not in codes(local)

    azure_with = validate_file(with_bom, provider="azure")
    assert azure_with.ok and "bom_adjusted" not in codes(azure_with), azure_with.render()
    azure_without = validate_file(without, provider="azure")
    assert azure_without.ok and "with one" in problem(azure_without, "bom_adjusted").message
    assert azure_without.warning_count == 0 and azure_without.error_count == 0


def test_the_upload_copy_carries_each_providers_bom(tmp_path, write_jsonl, valid_rows):
    import io

    from cloudtune.dataset import copy_for_upload, upload_encoding

    with_bom = write_jsonl(valid_rows, "bom.jsonl", prefix=BOM)
    without = write_jsonl(valid_rows, "plain.jsonl")
    body = without.read_bytes()
    original = with_bom.read_bytes()
    for source, provider, expected in ((with_bom, "openai", body), (without, "openai", body),
                                       (with_bom, "azure", BOM + body), (without, "azure", BOM + body),
                                       (with_bom, "local", BOM + body), (without, "local", body)):
        out = io.BytesIO()
        with open(source, "rb") as handle:
            copy_for_upload(handle, out, provider)
        assert out.getvalue() == expected, (source.name, provider)
    assert with_bom.read_bytes() == original  # the user's file is never modified
    assert (upload_encoding("openai"), upload_encoding("azure"), upload_encoding("local")) == ("utf-8", "utf-8-sig", None)


def test_crlf_line_endings(write_jsonl, valid_rows):
    report = validate_file(write_jsonl(valid_rows, newline=b"\r\n"))
    assert report.ok
    assert report.stats["training"]["line_endings"] == "crlf"
    assert report.stats["training"]["examples"] == 12


def test_mixed_line_endings(write_jsonl, valid_rows):
    rows = [json.dumps(r) + ("\r" if i % 2 else "") for i, r in enumerate(valid_rows)]
    report = validate_file(write_jsonl(rows))
    assert report.ok
    assert report.stats["training"]["line_endings"] == "mixed"


def test_no_trailing_newline(tmp_path, valid_rows):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in valid_rows))
    report = validate_file(path)
    assert report.ok and report.stats["training"]["examples"] == 12


def test_blank_line_in_the_middle(write_jsonl, valid_rows):
    rows = valid_rows[:5] + [""] + valid_rows[5:]
    report = validate_file(write_jsonl(rows))
    p = problem(report, "blank_line")
    assert p.line == 6 and p.severity == "warning"
    assert report.ok


def test_invalid_json_points_at_line_and_column(write_jsonl, valid_rows):
    rows = list(valid_rows)
    rows[7] = '{"messages": [}'
    report = validate_file(write_jsonl(rows))
    p = problem(report, "invalid_json")
    assert p.line == 8 and "column" in p.message
    assert report.stats["training"]["examples"] == 11


def test_nan_and_infinity(write_jsonl, valid_rows):
    rows = list(valid_rows)
    rows[0] = '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": NaN}]}'
    rows[1] = '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "t": -Infinity}'
    report = validate_file(write_jsonl(rows))
    lines = sorted(p.line for p in report.problems if p.code == "invalid_json_constant")
    assert lines == [1, 2]
    assert "invalid_weight" in codes(report)


def test_deeply_nested_json(write_jsonl, valid_rows):
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    rows = list(valid_rows) + [deep]
    report = validate_file(write_jsonl(rows))
    p = problem(report, "json_too_deep")
    assert p.line == 13
    assert report.stats["training"]["examples"] == 12


def test_nested_but_parseable_content_is_a_type_error(write_jsonl, valid_rows):
    nested = {"messages": [{"role": "user", "content": [[[[["x"]]]]]}, {"role": "assistant", "content": "y"}]}
    report = validate_file(write_jsonl(valid_rows + [nested]))
    assert "invalid_content_part" in codes(report)


def test_json_array_instead_of_jsonl(tmp_path, valid_rows):
    one_line = tmp_path / "array.jsonl"
    one_line.write_text(json.dumps(valid_rows))
    report = validate_file(one_line)
    assert codes(report) == {"json_array_not_jsonl"}
    assert problem(report, "json_array_not_jsonl").line == 1

    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(valid_rows, indent=2))
    assert codes(validate_file(pretty)) == {"json_array_not_jsonl"}


def test_pretty_printed_object(tmp_path, valid_rows):
    path = tmp_path / "pretty.jsonl"
    path.write_text("\n".join(json.dumps(r, indent=2) for r in valid_rows))
    report = validate_file(path)
    assert codes(report) == {"pretty_printed_json"}


def test_huge_single_line_is_skipped_with_bounded_memory(tmp_path, valid_rows):
    path = tmp_path / "huge.jsonl"
    chunk = b"a" * (1024 * 1024)
    with open(path, "wb") as handle:
        for row in valid_rows:
            handle.write(json.dumps(row).encode() + b"\n")
        handle.write(b'{"messages": [{"role": "user", "content": "')
        for _ in range(100):  # 100 MB in one line
            handle.write(chunk)
        handle.write(b'"}]}\n')
        handle.write(json.dumps(valid_rows[0]).encode() + b"\n")
    tracemalloc.start()
    try:
        report = validate_file(path, max_line_bytes=8 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    p = problem(report, "line_too_long")
    assert p.line == 13 and p.severity == "error"
    assert "104,857,6" in p.message  # its length is reported
    assert report.stats["training"]["examples"] == 13  # the line after it was read
    assert peak < 40 * 1024 * 1024, peak


def test_huge_single_line_default_limit(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'["' + b"x" * (40 * 1024 * 1024) + b'"]\n')
    report = validate_file(path)
    assert "json_array_not_jsonl" in codes(report)
    path.write_bytes(b'{"a": "' + b"x" * (40 * 1024 * 1024) + b'"}\n')
    report = validate_file(path)
    assert "line_too_long" in codes(report)


def test_random_garbage_lines(write_jsonl, valid_rows):
    rows = list(valid_rows) + [b"\xff\xfe\xfd", b"}{", b"null", b"42", b'"text"', b"[1,2]", b"true"]
    report = validate_file(write_jsonl(rows))
    assert {"invalid_utf8", "invalid_json", "data_type"} <= codes(report)
    for p in report.problems:
        assert p.line >= 1 and p.path


def test_huge_integer_is_invalid_json_not_a_crash(write_jsonl, valid_rows):
    rows = list(valid_rows) + ['{"messages": [], "n": ' + "9" * 10_000 + "}"]
    report = validate_file(write_jsonl(rows))
    assert problem(report, "invalid_json").line == 13


def test_provider_size_limits(write_jsonl):
    path = write_jsonl([chat_example(i) for i in range(100)])  # > 8 KB of text before the sparse tail
    with open(path, "r+b") as handle:  # sparse: 600 MB on paper, a few KB on disk
        handle.truncate(600 * 1024 * 1024)
    openai = validate_file(path, provider="openai")
    assert "file_needs_upload_api" in codes(openai, "warning")  # over 512 MB: the Uploads API takes it
    assert "file_too_large" not in codes(openai)
    azure = validate_file(path, provider="azure")
    assert problem(azure, "file_too_large").severity == "error"
    assert openai.stats["training"]["examples"] == 100
    assert "line_too_long" in codes(openai)  # the 600 MB of NULs after the last newline
