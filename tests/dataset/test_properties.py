"""Property tests: whatever the lines, the validator never raises and every
problem has a line, a path, a known code and a severity."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtune.dataset import CODES, validate_file

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)

roles = st.sampled_from(["system", "user", "assistant", "tool", "function", "human", "", None, 3])
contents = st.one_of(
    st.text(max_size=40), st.none(), json_values,
    st.sampled_from(["<|endoftext|>", "<|im_start|>x", "   ", ""]),
    st.lists(st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=10), json_scalars)}),
        st.fixed_dictionaries({"type": st.just("image_url"),
                               "image_url": st.one_of(st.fixed_dictionaries({"url": st.sampled_from(
                                   ["https://x/y.png", "data:image/png;base64,AA", "ftp://x"])}), json_scalars)}),
        json_values), max_size=3),
)
tool_calls = st.lists(st.one_of(json_values, st.fixed_dictionaries({
    "id": st.one_of(st.sampled_from(["c1", "c2"]), json_scalars),
    "type": st.sampled_from(["function", "x"]),
    "function": st.one_of(json_values, st.fixed_dictionaries({
        "name": st.one_of(st.sampled_from(["f", "g"]), json_scalars),
        "arguments": st.one_of(st.sampled_from(["{}", '{"a":1}', "{bad"]), json_values)}))})), max_size=3)
messages = st.lists(st.fixed_dictionaries(
    {"role": roles},
    optional={"content": contents, "name": st.one_of(st.text(max_size=8), json_scalars),
              "weight": st.one_of(st.sampled_from([0, 1, 2, 0.5]), json_scalars), "tool_calls": tool_calls,
              "tool_call_id": st.one_of(st.sampled_from(["c1", "c2"]), json_scalars),
              "function_call": json_values, "extra": json_scalars}), max_size=6)
chat_rows = st.fixed_dictionaries({}, optional={
    "messages": st.one_of(messages, json_values),
    "tools": st.one_of(json_values, st.lists(st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": st.sampled_from(["f", "bad name"])})}),
        max_size=2)),
    "functions": json_values,
})
dpo_rows = st.fixed_dictionaries({}, optional={
    "input": st.one_of(json_values, st.fixed_dictionaries({"messages": messages})),
    "preferred_output": st.one_of(messages, json_values),
    "non_preferred_output": st.one_of(messages, json_values),
    "preferred_completion": messages,
})
rows = st.one_of(chat_rows, dpo_rows, json_values)


def _line(row) -> bytes:
    return json.dumps(row, allow_nan=True).encode()


raw_lines = st.one_of(
    rows.map(_line),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"[", b"{", b"\xef\xbb\xbf{}", b"NaN", b'{"a": Infinity}', b"[" * 5000 + b"]" * 5000,
                     b"\x00\x00", b"\r", b'{"messages": [' + b"[" * 3000 + b"]" * 3000 + b"]}"]),
)


def _assert_report(report):
    for p in report.problems:
        assert isinstance(p.line, int) and p.line >= 0
        assert isinstance(p.path, str) and p.path
        assert p.code in CODES, p.code
        assert p.severity in ("error", "warning", "note")  # note: e.g. the BOM adjusted in the upload copy
        assert p.code != "validator_error", p
    json.dumps(report.to_dict())
    report.render(color=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(lines=st.lists(raw_lines, max_size=8), provider=st.sampled_from(["openai", "azure", "local"]),
       method=st.sampled_from(["supervised", "dpo"]), newline=st.sampled_from([b"\n", b"\r\n"]))
def test_validator_never_raises_on_any_lines(tmp_path_factory, lines, provider, method, newline):
    path = tmp_path_factory.mktemp("prop") / "data.jsonl"
    path.write_bytes(newline.join(lines))
    report = validate_file(path, provider=provider, method=method, model="gpt-4o-mini", validation_path=path)
    _assert_report(report)
    for p in report.problems:
        if p.line:
            # lines end at b"\n" (a generated line may hold one, whichever newline joins them)
            assert p.line <= max(1, len(path.read_bytes().split(b"\n"))) + 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(examples=st.lists(chat_rows, min_size=1, max_size=6), method=st.sampled_from(["supervised", "dpo"]))
def test_structured_malformed_examples(tmp_path_factory, examples, method):
    path = tmp_path_factory.mktemp("prop") / "data.jsonl"
    path.write_bytes(b"\n".join(_line(row) for row in examples) + b"\n")
    report = validate_file(path, provider="openai", method=method)
    _assert_report(report)
    assert report.stats["training"]["lines"] == len(examples)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_arbitrary_file_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prop") / "data.jsonl"
    path.write_bytes(data)
    _assert_report(validate_file(path))
