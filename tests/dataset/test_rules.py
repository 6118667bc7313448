"""Every rule: the code it emits, its severity, line and JSON path."""

from __future__ import annotations

import pytest

from cloudtune.dataset import CODES, validate_file

from .conftest import chat_example, codes, dpo_row, problem


def check(write_jsonl, example, *, provider="openai", method="supervised", model=None, pad=11, **kw):
    """Validate ``example`` as line 1 of a file padded with valid examples."""
    filler = [dpo_row(i) for i in range(pad)] if method == "dpo" else [chat_example(i) for i in range(pad)]
    return validate_file(write_jsonl([example] + filler), provider=provider, method=method, model=model, **kw)


def only(report, code):
    """The problems of ``code`` are on line 1; return the first."""
    p = problem(report, code)
    assert p.line == 1, p
    return p


def msgs(*messages, **extra):
    return {"messages": list(messages), **extra}


U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
S = {"role": "system", "content": "be nice"}


# ------------------------------------------------------------ cookbook codes

def test_data_type(write_jsonl):
    p = only(check(write_jsonl, [1, 2]), "data_type")
    assert p.path == "$" and p.severity == "error"


@pytest.mark.parametrize("example", [{}, {"messages": []}, {"messages": "hi"}, {"messages": None}])
def test_missing_messages_list(write_jsonl, example):
    p = only(check(write_jsonl, example), "missing_messages_list")
    assert p.path == "messages"


def test_message_not_an_object(write_jsonl):
    p = only(check(write_jsonl, msgs(S, "hello", A)), "data_type")
    assert p.path == "messages[1]"


def test_message_missing_role_and_content(write_jsonl):
    report = check(write_jsonl, msgs(S, {"content": "x"}, {"role": "user"}, A))
    paths = {p.path for p in report.problems if p.code == "message_missing_key"}
    assert paths == {"messages[1].role", "messages[2].content"}


def test_message_unrecognized_key(write_jsonl):
    p = only(check(write_jsonl, msgs(S, dict(U, mood="happy"), A)), "message_unrecognized_key")
    assert p.path == "messages[1].mood" and p.severity == "error"


def test_unrecognized_role(write_jsonl):
    p = only(check(write_jsonl, msgs(S, {"role": "human", "content": "x"}, A)), "unrecognized_role")
    assert p.path == "messages[1].role" and "human" in p.message
    only(check(write_jsonl, msgs(S, {"role": 7, "content": "x"}, A)), "unrecognized_role")


@pytest.mark.parametrize("content", [None, 5, {"text": "x"}, True])
def test_missing_content(write_jsonl, content):
    p = only(check(write_jsonl, msgs(S, {"role": "user", "content": content}, A)), "missing_content")
    assert p.path == "messages[1].content"


def test_example_missing_assistant_message(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U)), "example_missing_assistant_message")
    assert p.path == "messages" and p.severity == "error"


def test_missing_system_and_user_are_warnings(write_jsonl):
    report = check(write_jsonl, msgs(A))
    assert only(report, "missing_system_message").severity == "warning"
    assert only(report, "missing_user_message").severity == "warning"
    assert report.ok


# ------------------------------------------------------------ beyond the cookbook

def test_unrecognized_top_level_key_is_a_warning(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, A, extra=1)), "unrecognized_key")
    assert p.path == "extra" and p.severity == "warning"


@pytest.mark.parametrize("content", ["", "   \n\t"])
def test_empty_content(write_jsonl, content):
    report = check(write_jsonl, msgs(S, {"role": "user", "content": content}, {"role": "assistant", "content": content}))
    found = {p.path: p.severity for p in report.problems if p.code == "empty_content"}
    assert found == {"messages[1].content": "warning", "messages[2].content": "error"}


def test_last_message_not_assistant(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, A, U)), "last_message_not_assistant")
    assert p.path == "messages[3]" and p.severity == "warning"


def test_weight_valid_values(write_jsonl):
    report = check(write_jsonl, msgs(S, U, dict(A, weight=0), U, dict(A, weight=1)))
    assert report.ok, report.render()


@pytest.mark.parametrize("weight", [2, 0.5, "1", True, None, -1])
def test_invalid_weight(write_jsonl, weight):
    p = only(check(write_jsonl, msgs(S, U, dict(A, weight=weight))), "invalid_weight")
    assert p.path == "messages[2].weight"


def test_weight_not_on_assistant(write_jsonl):
    p = only(check(write_jsonl, msgs(S, dict(U, weight=1), A)), "weight_not_on_assistant")
    assert p.path == "messages[1].weight"


def test_all_weights_zero(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, dict(A, weight=0))), "no_trainable_assistant_message")
    assert p.severity == "warning"


def test_weight_zero_excludes_tokens_from_assistant_count(write_jsonl):
    rows = [msgs(S, U, dict(A, content="one two three four five six", weight=0), U, A) for _ in range(10)]
    trained = validate_file(write_jsonl(rows), model="gpt-4o-mini")
    rows = [msgs(S, U, dict(A, content="one two three four five six"), U, A) for _ in range(10)]
    full = validate_file(write_jsonl(rows, "b.jsonl"), model="gpt-4o-mini")
    assert trained.token_counts["training"]["total"] == full.token_counts["training"]["total"]
    assert trained.token_counts["training"]["assistant"] < full.token_counts["training"]["assistant"]


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, 3])
def test_invalid_name(write_jsonl, name):
    p = only(check(write_jsonl, msgs(S, dict(U, name=name), A)), "invalid_name")
    assert p.path == "messages[1].name"


def test_valid_name(write_jsonl):
    assert check(write_jsonl, msgs(S, dict(U, name="alice_01"), A)).ok


def _call(call_id="call_1", name="get_weather", arguments='{"city": "Paris"}'):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_tool_round_trip_is_valid(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [_call()]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "18C"}, A, tools=TOOLS)
    report = check(write_jsonl, example)
    assert report.ok and not codes(report), report.render()


def test_example_may_end_with_a_tool_call(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "tool_calls": [_call()]}, tools=TOOLS)
    assert check(write_jsonl, example).ok


def test_tool_message_answering_unknown_id(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [_call()]},
                   {"role": "tool", "tool_call_id": "call_9", "content": "18C"}, A)
    p = only(check(write_jsonl, example), "tool_call_id_unknown")
    assert p.path == "messages[3].tool_call_id" and p.severity == "error"


def test_tool_message_answering_twice(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [_call()]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                   {"role": "tool", "tool_call_id": "call_1", "content": "18C"}, A)
    assert only(check(write_jsonl, example), "tool_call_id_unknown").path == "messages[4].tool_call_id"


def test_tool_message_without_id(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [_call()]},
                   {"role": "tool", "content": "18C"}, A)
    assert only(check(write_jsonl, example), "message_missing_key").path == "messages[3].tool_call_id"


def test_tool_call_id_on_non_tool_message(write_jsonl):
    p = only(check(write_jsonl, msgs(S, dict(U, tool_call_id="x"), A)), "message_unrecognized_key")
    assert p.path == "messages[1].tool_call_id"


def test_unanswered_tool_call(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [_call()]}, U, A)
    p = only(check(write_jsonl, example), "tool_call_unanswered")
    assert p.path == "messages[2].tool_calls[0]" and p.severity == "warning"


@pytest.mark.parametrize("calls", [[], "x", {"id": "a"}])
def test_invalid_tool_calls(write_jsonl, calls):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "content": None, "tool_calls": calls})),
             "invalid_tool_calls")
    assert p.path == "messages[2].tool_calls"


def test_tool_calls_on_user_message(write_jsonl):
    p = only(check(write_jsonl, msgs(S, dict(U, tool_calls=[_call()]), A)), "invalid_tool_calls")
    assert p.path == "messages[1].tool_calls"


@pytest.mark.parametrize("call, path", [
    ("nope", "messages[2].tool_calls[0]"),
    ({"type": "function", "function": {"name": "f", "arguments": "{}"}}, "messages[2].tool_calls[0].id"),
    ({"id": "c", "type": "code", "function": {"name": "f", "arguments": "{}"}}, "messages[2].tool_calls[0].type"),
    ({"id": "c", "type": "function"}, "messages[2].tool_calls[0].function"),
    ({"id": "c", "type": "function", "function": {"arguments": "{}"}}, "messages[2].tool_calls[0].function.name"),
    ({"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
     "messages[2].tool_calls[0].function.arguments"),
])
def test_invalid_tool_call(write_jsonl, call, path):
    report = check(write_jsonl, msgs(S, U, {"role": "assistant", "content": None, "tool_calls": [call]}))
    assert path in {p.path for p in report.problems if p.code == "invalid_tool_call"}, report.render()


def test_tool_call_arguments_not_json(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "tool_calls": [_call(arguments="{city: Paris")]})),
             "tool_call_arguments_not_json")
    assert p.path == "messages[2].tool_calls[0].function.arguments"


def test_duplicate_tool_call_id(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "tool_calls": [_call(), _call()]})),
             "duplicate_tool_call_id")
    assert p.path == "messages[2].tool_calls[1].id"


def test_tool_call_unknown_function(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "tool_calls": [_call(name="book_flight")]}, tools=TOOLS)
    p = only(check(write_jsonl, example), "tool_call_unknown_function")
    assert p.severity == "warning" and p.path == "messages[2].tool_calls[0].function.name"


@pytest.mark.parametrize("tools, path", [
    ("x", "tools"),
    ([{"type": "retrieval"}], "tools[0]"),
    ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "tools[0].function.description"),
    ([{"type": "function", "function": "f"}], "tools[0].function"),
])
def test_invalid_tools(write_jsonl, tools, path):
    report = check(write_jsonl, msgs(S, U, A, tools=tools))
    assert path in {p.path for p in report.problems if p.code == "invalid_tools"}, report.render()


def test_invalid_functions(write_jsonl):
    report = check(write_jsonl, msgs(S, U, A, functions=[{"name": 5}]))
    assert only(report, "invalid_functions").path == "functions[0].name"
    assert only(check(write_jsonl, msgs(S, U, A, functions={})), "invalid_functions").path == "functions"


def test_legacy_function_call_round_trip(write_jsonl):
    example = msgs(S, U, {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                   {"role": "function", "name": "f", "content": "42"}, A, functions=[{"name": "f"}])
    assert check(write_jsonl, example).ok


@pytest.mark.parametrize("call", ["f", {"name": "f"}, {"arguments": "{}"}])
def test_invalid_function_call(write_jsonl, call):
    report = check(write_jsonl, msgs(S, U, {"role": "assistant", "content": None, "function_call": call}))
    assert "invalid_function_call" in codes(report)
    assert all(p.path.startswith("messages[2].function_call") for p in report.problems if p.code == "invalid_function_call")


def test_function_call_on_user(write_jsonl):
    p = only(check(write_jsonl, msgs(S, dict(U, function_call={"name": "f", "arguments": "{}"}), A)),
             "invalid_function_call")
    assert p.path == "messages[1].function_call"


def test_function_message_without_call(write_jsonl):
    report = check(write_jsonl, msgs(S, U, {"role": "function", "name": "f", "content": "42"}, A))
    assert only(report, "function_message_without_call").severity == "warning"
    report = check(write_jsonl, msgs(S, U, {"role": "function", "content": "42"}, A))
    assert only(report, "message_missing_key").path == "messages[2].name"


def test_content_null_only_with_a_call(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "content": None})), "missing_content")
    assert p.path == "messages[2].content"
    no_content_key = check(write_jsonl, msgs(S, U, {"role": "assistant"}))
    assert only(no_content_key, "message_missing_key").path == "messages[2].content"


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
TEXT = {"type": "text", "text": "what is this?"}


def test_multimodal_parts_accepted_by_openai(write_jsonl):
    report = check(write_jsonl, msgs(S, {"role": "user", "content": [TEXT, IMAGE]}, A))
    assert report.ok, report.render()
    assert report.stats["training"]["images"] == 1
    assert "ESTIMATE" in report.token_counts["images_note"]


def test_multimodal_refused_locally(write_jsonl):
    p = only(check(write_jsonl, msgs(S, {"role": "user", "content": [TEXT, IMAGE]}, A), provider="local"),
             "multimodal_not_supported")
    assert p.path == "messages[1].content[1]"


def test_image_outside_user_message(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "content": [IMAGE]})), "image_not_in_user_message")
    assert p.path == "messages[2].content[0]"


@pytest.mark.parametrize("url", ["http://example.com/x.png", "file:///etc/passwd", "data:text/plain;base64,AAAA"])
def test_invalid_image_url(write_jsonl, url):
    part = {"type": "image_url", "image_url": {"url": url}}
    p = only(check(write_jsonl, msgs(S, {"role": "user", "content": [part]}, A)), "invalid_image_url")
    assert p.path == "messages[1].content[0].image_url.url"


def test_data_url_image_accepted(write_jsonl):
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert check(write_jsonl, msgs(S, {"role": "user", "content": [part]}, A)).ok


@pytest.mark.parametrize("part, path", [
    ("text", "messages[1].content[0]"),
    ({"type": "audio"}, "messages[1].content[0].type"),
    ({"type": "text", "text": 5}, "messages[1].content[0].text"),
    ({"type": "image_url", "image_url": "https://x"}, "messages[1].content[0].image_url.url"),
])
def test_invalid_content_part(write_jsonl, part, path):
    report = check(write_jsonl, msgs(S, {"role": "user", "content": [part]}, A))
    assert path in {p.path for p in report.problems if p.code == "invalid_content_part"}, report.render()


def test_empty_parts_list(write_jsonl):
    p = only(check(write_jsonl, msgs(S, U, {"role": "assistant", "content": []})), "empty_content")
    assert p.severity == "error"


@pytest.mark.parametrize("token", ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_suffix|>"])
def test_special_tokens_error_hosted_warning_local(write_jsonl, token):
    example = msgs(S, {"role": "user", "content": f"before {token} after"}, A)
    hosted = only(check(write_jsonl, example), "special_token")
    assert hosted.severity == "error" and token in hosted.message and hosted.path == "messages[1].content"
    azure = only(check(write_jsonl, example, provider="azure"), "special_token")
    assert azure.severity == "error"
    local = check(write_jsonl, example, provider="local")
    assert only(local, "special_token").severity == "warning"
    assert local.ok


def test_special_token_in_text_part(write_jsonl):
    example = msgs(S, {"role": "user", "content": [{"type": "text", "text": "x <|endoftext|>"}]}, A)
    assert only(check(write_jsonl, example), "special_token").path == "messages[1].content[0].text"


def test_lookalike_is_not_a_special_token(write_jsonl):
    assert check(write_jsonl, msgs(S, {"role": "user", "content": "a <|b|> and <| endoftext |>"}, A)).ok


def test_duplicate_examples(write_jsonl):
    rows = [chat_example(i) for i in range(12)] + [chat_example(3)]
    report = validate_file(write_jsonl(rows))
    p = problem(report, "duplicate_example")
    assert p.line == 13 and "line 4" in p.message and p.severity == "warning"
    assert report.stats["training"]["duplicates"] == 1


def test_validation_leak(write_jsonl):
    train = write_jsonl([chat_example(i) for i in range(12)], "train.jsonl")
    valid = write_jsonl([chat_example(100), chat_example(5)], "valid.jsonl", newline=b"\r\n")
    report = validate_file(train, validation_path=valid)
    p = problem(report, "validation_leak")
    assert p.file == "validation" and p.line == 2 and "training line 6" in p.message
    assert report.ok  # a warning
    assert report.stats["validation"]["examples"] == 2


def test_validation_file_problems_are_labelled(write_jsonl):
    train = write_jsonl([chat_example(i) for i in range(12)], "train.jsonl")
    valid = write_jsonl(["{oops", chat_example(1000)], "valid.jsonl")
    report = validate_file(train, validation_path=valid)
    p = problem(report, "invalid_json")
    assert p.file == "validation" and p.line == 1
    assert not report.ok


def test_too_few_examples(write_jsonl):
    report = validate_file(write_jsonl([chat_example(i) for i in range(9)]))
    p = problem(report, "too_few_examples")
    assert p.line == 0 and p.severity == "error" and "10" in p.message
    assert validate_file(write_jsonl([chat_example(i) for i in range(3)], "l.jsonl"), provider="local").ok


def test_example_too_long_counted(write_jsonl):
    long = msgs(S, {"role": "user", "content": "word " * 5000}, A)
    rows = [long, long | {"x": 1}] + [chat_example(i) for i in range(10)]
    report = validate_file(write_jsonl(rows), model="gpt-3.5-turbo-0613")  # 4,096-token examples
    too_long = [p for p in report.problems if p.code == "example_too_long"]
    assert [p.line for p in too_long] == [1, 2]
    assert report.stats["training"]["examples_over_context"] == 2
    # billed tokens are capped at the context
    assert report.estimate.billed_tokens_per_epoch < report.token_counts["training"]["total"]


def test_unknown_model_and_unsupported_method(write_jsonl, valid_rows):
    path = write_jsonl(valid_rows)
    report = validate_file(path, model="gpt-9-ultra")
    assert problem(report, "unknown_model").severity == "warning"
    assert report.token_counts["exact"] is False
    report = validate_file(path, model="gpt-3.5-turbo-0125", method="dpo")
    assert "method_not_supported" in codes(report, "error")
    assert "method_not_supported" in codes(validate_file(path, method="rlhf"), "error")


# ------------------------------------------------------------ preference rows

def test_dpo_valid(write_jsonl):
    report = check(write_jsonl, dpo_row(99), method="dpo", model="gpt-4o-mini-2024-07-18")
    assert report.ok, report.render()
    assert report.stats["training"]["examples"] == 12


def test_dpo_completion_spelling_accepted(write_jsonl):
    row = dpo_row(99)
    row["preferred_completion"] = row.pop("preferred_output")
    row["non_preferred_completion"] = row.pop("non_preferred_output")
    assert check(write_jsonl, row, method="dpo").ok


@pytest.mark.parametrize("row, path", [
    ({"preferred_output": [A], "non_preferred_output": [A]}, "input"),
    ({"input": {"messages": []}, "preferred_output": [A], "non_preferred_output": [A]}, "input.messages"),
    ({"input": "hi", "preferred_output": [A], "non_preferred_output": [A]}, "input"),
])
def test_dpo_missing_input(write_jsonl, row, path):
    assert only(check(write_jsonl, row, method="dpo"), "dpo_missing_input").path == path


@pytest.mark.parametrize("output", [None, [], [A, A], [U], "hello", [{"content": "x"}]])
def test_dpo_invalid_output(write_jsonl, output):
    row = dpo_row(99)
    row["preferred_output"] = output
    p = only(check(write_jsonl, row, method="dpo"), "dpo_invalid_output")
    assert p.path == "preferred_output"


def test_dpo_identical_outputs(write_jsonl):
    row = dpo_row(99)
    row["non_preferred_output"] = row["preferred_output"]
    assert only(check(write_jsonl, row, method="dpo"), "dpo_identical_outputs").severity == "warning"


def test_dpo_input_not_ending_with_user(write_jsonl):
    row = dpo_row(99)
    row["input"]["messages"].append(A)
    assert only(check(write_jsonl, row, method="dpo"), "dpo_input_not_ending_with_user").path == "input.messages[1]"


def test_dpo_inner_message_problems_have_paths(write_jsonl):
    row = dpo_row(99)
    row["input"]["messages"][0]["role"] = "human"
    row["preferred_output"][0]["content"] = "x <|endoftext|>"
    report = check(write_jsonl, row, method="dpo")
    assert only(report, "unrecognized_role").path == "input.messages[0].role"
    assert only(report, "special_token").path == "preferred_output[0].content"


def test_dpo_row_in_supervised_and_chat_row_in_dpo(write_jsonl):
    assert only(check(write_jsonl, dpo_row(99)), "dpo_row_in_supervised").severity == "error"
    assert only(check(write_jsonl, chat_example(99), method="dpo"), "dpo_expected_preference_row")


def test_dpo_token_counts_include_both_outputs(write_jsonl):
    report = validate_file(write_jsonl([dpo_row(i) for i in range(12)]), method="dpo", model="gpt-4o-mini")
    stats = report.stats["training"]
    assert stats["assistant_tokens_per_example"]["total"] > 0
    assert stats["tokens_per_example"]["total"] > stats["assistant_tokens_per_example"]["total"]


# ------------------------------------------------------------ coverage of the code table

def test_every_code_is_documented_and_every_problem_has_line_and_path(write_jsonl):
    samples = [
        [1], {}, msgs(S, {"content": "x"}, A), msgs(S, dict(U, bad=1), A), msgs({"role": "x", "content": "y"}),
        msgs(S, {"role": "user", "content": None}, A), msgs(S, U), msgs(A, extra=1), msgs(S, U, A, U),
        msgs(S, U, dict(A, weight=3)), msgs(S, dict(U, weight=1), A), msgs(S, dict(U, name=""), A),
    ]
    report = validate_file(write_jsonl(samples))
    for p in report.problems:
        assert p.code in CODES
        assert isinstance(p.line, int) and p.line >= 0 and p.path
        assert p.severity in ("error", "warning")
        assert str(p)


def test_tool_call_text_counts_as_trained_tokens(write_jsonl):
    call = msgs(S, U, {"role": "assistant", "tool_calls": [_call(arguments='{"city": "Paris, France, Europe"}')]})
    plain = msgs(S, U, {"role": "assistant", "content": "ok"})
    with_call = validate_file(write_jsonl([call] * 10, "a.jsonl"), model="gpt-4o-mini")
    without = validate_file(write_jsonl([plain] * 10, "b.jsonl"), model="gpt-4o-mini")
    assert with_call.token_counts["training"]["assistant"] > without.token_counts["training"]["assistant"]


def test_every_code_has_a_test_that_names_it():
    from pathlib import Path

    here = Path(__file__).parent
    text = "".join(p.read_text() for p in here.glob("test_*.py") if p.name != Path(__file__).name)
    text += Path(__file__).read_text().split("def test_every_code_has_a_test_that_names_it")[0]
    untested = sorted(code for code in CODES if code != "validator_error" and f'"{code}"' not in text)
    assert not untested, f"codes without a test: {untested}"
