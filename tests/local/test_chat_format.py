"""The assistant-only loss mask: exactly the assistant's words plus the end-of-turn/EOS
token are trained, on ChatML, on a Zephyr-style template, on a template with
``{% generation %}`` markers, and on a template that never emits EOS."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_backend.chat_format import IGNORE_INDEX, encode_chat

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Question number 1?"},
    {"role": "assistant", "content": "Ahoy matey!"},
    {"role": "user", "content": "Question number 2?"},
    {"role": "assistant", "content": "Arr."},
]

ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
CHATML_WITH_MARKERS = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PLAIN_NO_EOS = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trained_runs(tokenizer, encoded) -> list[str]:  # type: ignore[no-untyped-def]
    """Decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_chatml_trains_only_assistant_turns_and_their_end_token(tokenizer) -> None:  # type: ignore[no-untyped-def]
    encoded = encode_chat(tokenizer, CONVERSATION)
    assert _trained_runs(tokenizer, encoded) == ["Ahoy matey!<|im_end|>\n", "Arr.<|im_end|>\n"]


def test_pad_equal_to_eos_still_trains_the_eos(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the trap this guards against
    encoded = encode_chat(tokenizer, CONVERSATION)
    assert tokenizer.eos_token_id in [label for label in encoded.labels if label != IGNORE_INDEX]


def test_zephyr_style_template_by_prefix_differences(tokenizer) -> None:  # type: ignore[no-untyped-def]
    tokenizer.chat_template = ZEPHYR
    encoded = encode_chat(tokenizer, CONVERSATION)
    assert _trained_runs(tokenizer, encoded) == ["Ahoy matey!<|im_end|>\n", "Arr.<|im_end|>\n"]
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|system|>\nBe brief.")


def test_generation_markers_are_used_when_present(tokenizer) -> None:  # type: ignore[no-untyped-def]
    tokenizer.chat_template = CHATML_WITH_MARKERS
    encoded = encode_chat(tokenizer, CONVERSATION)
    # the markers exclude the newline after <|im_end|>, unlike the prefix method
    assert _trained_runs(tokenizer, encoded) == ["Ahoy matey!<|im_end|>", "Arr.<|im_end|>"]


def test_template_without_eos_gets_one_appended_and_trained(tokenizer) -> None:  # type: ignore[no-untyped-def]
    tokenizer.chat_template = PLAIN_NO_EOS
    encoded = encode_chat(tokenizer, CONVERSATION)
    runs = _trained_runs(tokenizer, encoded)
    # The first token merges the template's space with the answer (" Ahoy"); it is trained.
    assert runs == [" Ahoy matey!\n", " Arr.\n<|im_end|>"]
    assert encoded.input_ids[-1] == tokenizer.eos_token_id


def test_truncation_is_reported(tokenizer) -> None:  # type: ignore[no-untyped-def]
    full = encode_chat(tokenizer, CONVERSATION)
    cut = encode_chat(tokenizer, CONVERSATION, max_length=len(full.input_ids) - 3)
    assert cut.truncated and not full.truncated
    assert len(cut.input_ids) == len(full.input_ids) - 3 and cut.full_length == len(full.input_ids)
