"""The rules' shortcut for plain messages (a system/user/assistant role and
non-blank string content) finds what the full checks find."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtune import catalog
from cloudtune.dataset._rules import Rules


def _check(row, provider: str = "openai"):
    rules_data = catalog.provider_rules(provider)
    rules = Rules(provider_rules=rules_data, method="supervised", special_tokens=rules_data.special_tokens)
    reports = []
    summary = rules.check_row(row, lambda *args: reports.append(args))
    shape = None if summary is None else (summary.messages, dict(summary.roles), summary.images,
                                          [(g.texts, g.trained, g.overhead) for g in summary.groups])
    return reports, shape


_content = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\n\t ", "\u3000", "<|endoftext|> hi",
                                                            "a <|im_start|> b <|im_end|>", "  ok  "]))
_message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": _content})


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_message, min_size=1, max_size=6), provider=st.sampled_from(["openai", "local"]))
def test_plain_assistant_messages_check_like_weighted_ones(messages, provider):
    # "weight": 1 changes nothing about an assistant message, but takes it down
    # the full path: both must report the same problems, paths and counts.
    weighted = [dict(m, weight=1) if m["role"] == "assistant" else m for m in messages]
    assert _check({"messages": messages}, provider) == _check({"messages": weighted}, provider)


def test_blank_content_and_special_tokens_on_the_short_path():
    reports, shape = _check({"messages": [
        {"role": "system", "content": "<|endoftext|>"},
        {"role": "user", "content": " \n"},
        {"role": "assistant", "content": "fine <|im_end|>"},
    ]})
    assert [(path, code, severity) for path, code, severity, _ in reports] == [
        ("messages[0].content", "special_token", "error"),
        ("messages[1].content", "empty_content", "warning"),
        ("messages[2].content", "special_token", "error"),
    ]
    assert shape[0] == 3 and shape[1] == {"system": 1, "user": 1, "assistant": 1}
    texts, trained, overhead = shape[3][0]
    assert texts == ["system", "<|endoftext|>", "user", " \n", "assistant", "fine <|im_end|>"]
    assert trained == [5] and overhead == 3 * 3 + 3


def test_a_plain_message_after_an_unanswered_tool_call_is_still_flagged():
    reports, _ = _check({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "user", "content": "hello?"},
        {"role": "assistant", "content": "sorry"},
    ]})
    assert [(path, code) for path, code, _, _ in reports] == [("messages[1].tool_calls[0]", "tool_call_unanswered"),
                                                              ("messages", "missing_system_message")]
