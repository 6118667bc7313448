"""Chat examples -> token ids + labels, training only on what the assistant says.

Two ways to find the assistant's tokens, in order of preference:

1. the chat template marks them with ``{% generation %}`` blocks: transformers then
   returns the mask itself (``return_assistant_tokens_mask``);
2. otherwise, prefix differences, which work with any template: render the
   conversation up to each assistant turn with the generation prompt, and up to the
   end of that turn; the characters in between are the assistant's answer including
   the template's end-of-turn text. Templates that close a rendering with EOS only
   when no generation prompt is asked for (Phi-3, Phi-3.5: ``{% else %}{{ eos_token }}``)
   are handled by dropping that trailing EOS from the partial rendering. The full
   conversation is tokenised once and tokens are labelled by character offsets, so BPE
   merges at the start of an answer cannot shift the mask; where a token would straddle
   the end of a turn (an end-of-turn marker that is not a special token of this
   tokenizer, e.g. ``<|eot_id|>`` on a plain BPE), the text is cut there and tokenised in
   pieces, so nothing past the end of a turn is ever trained.

The model must learn to stop: if the last assistant turn contains no stop token (EOS
or an end-of-turn marker that inference stops on, see :func:`stop_token_ids`), the EOS
right after it is labelled, or one is appended. Labels come only from this mask, never
from ``input_ids != pad_token_id``, so a tokenizer whose pad token is its EOS token
still learns to stop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100

# A minimal ChatML template for tokenizers that have none (the tiny test models use it too).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    full_length: int = 0

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0  # nothing left to train on after truncation
    tokens: int = 0
    trained_tokens: int = 0
    notes: list[str] = field(default_factory=list)


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE


def has_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return bool(_GENERATION_TAG.search(template))


def _clean(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    cleaned = []
    for message in messages:
        item = {"role": message["role"], "content": message.get("content") or ""}
        cleaned.append(item)
    return cleaned


def _render(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _partial_prefix(full: str, partial: str, eos_token: str | None) -> str | None:
    """``partial`` as a prefix of ``full``: as is, or without the EOS some templates add only
    at the very end of a rendering (Phi-3 / Phi-3.5 without a generation prompt)."""
    if full.startswith(partial):
        return partial
    if eos_token and partial.endswith(eos_token) and full.startswith(partial[: -len(eos_token)]):
        return partial[: -len(eos_token)]
    return None


def assistant_char_spans(
    tokenizer, messages: list[dict[str, Any]], *, train_from: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character spans of each assistant turn from message
    ``train_from`` on (prefix differences)."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    eos_token = getattr(tokenizer, "eos_token", None)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index < train_from:
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
        through = _partial_prefix(
            full, _render(tokenizer, messages[: index + 1], add_generation_prompt=False), eos_token
        )
        if through is None or not full.startswith(before) or len(through) <= len(before):
            raise ValueError(
                "this chat template renders earlier turns differently once later turns exist; "
                "cannot locate assistant turns by prefix"
            )
        spans.append((len(before), len(through)))
    return full, spans


def _tokenize_with_offsets(tokenizer, text: str, cuts: Sequence[int] = ()) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text``, tokenised separately between ``cuts``."""
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    for start, stop in zip(bounds, bounds[1:]):
        encoded = tokenizer(text[start:stop], add_special_tokens=False, return_offsets_mapping=True)
        ids += list(encoded["input_ids"])
        offsets += [(start + a, start + b) for a, b in encoded["offset_mapping"]]
    return ids, offsets


def _straddles(offsets: Sequence[tuple[int, int]], ends: Sequence[int]) -> bool:
    return any(start < end < stop for start, stop in offsets for end in ends)


def encode_chat(
    tokenizer, messages: Sequence[Mapping[str, Any]], *, max_length: int | None = None, train_from: int = 0
) -> Encoded:
    """Token ids and labels (IGNORE_INDEX outside assistant turns) for one conversation;
    assistant turns before message ``train_from`` are context only (DPO prompts)."""
    ensure_chat_template(tokenizer)
    msgs = _clean(messages)
    if has_generation_markers(tokenizer):
        out = tokenizer.apply_chat_template(
            msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, add_generation_prompt=False
        )
        ids = list(out["input_ids"])
        mask = list(out["assistant_masks"])
        if train_from:
            context = len(prompt_ids(tokenizer, msgs[:train_from]))
            mask = [0] * min(context, len(mask)) + mask[context:]
        labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, mask)]
    else:
        text, spans = assistant_char_spans(tokenizer, msgs, train_from=train_from)
        ends = [end for _, end in spans]
        ids, offsets = _tokenize_with_offsets(tokenizer, text)
        if _straddles(offsets, ends):
            ids, offsets = _tokenize_with_offsets(tokenizer, text, cuts=ends)
        # A token belongs to a turn when it overlaps that turn's characters: a BPE token that
        # merges the template's trailing space with the first word ("assistant: " + "Hi" ->
        # " Hi") is part of the answer the model must learn to produce. No token crosses a
        # turn's end (see above), so nothing after the turn is trained.
        labels = [
            tok if start < end and any(start < e and end > s for s, e in spans) else IGNORE_INDEX
            for tok, (start, end) in zip(ids, offsets)
        ]
    _ensure_stop_trained(tokenizer, ids, labels)
    full_length = len(ids)
    truncated = False
    if max_length is not None and len(ids) > max_length:
        ids, labels, truncated = ids[:max_length], labels[:max_length], True
    return Encoded(ids, labels, truncated=truncated, full_length=full_length)


def _ensure_stop_trained(tokenizer, ids: list[int], labels: list[int]) -> None:
    """Make sure the model is taught to stop: the last assistant turn must contain a labelled
    stop token (EOS or an end-of-turn marker inference stops on). Otherwise the EOS right
    after the turn is labelled, or one is inserted there."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return
    last = max((i for i, label in enumerate(labels) if label != IGNORE_INDEX), default=None)
    if last is None:
        return
    first = last
    while first > 0 and labels[first - 1] != IGNORE_INDEX:
        first -= 1
    if set(labels[first : last + 1]) & set(stop_token_ids(tokenizer)):
        return
    if last + 1 < len(ids) and ids[last + 1] == eos:
        labels[last + 1] = eos
        return
    ids.insert(last + 1, eos)
    labels.insert(last + 1, eos)


def prompt_ids(tokenizer, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Token ids of a conversation followed by the assistant generation prompt."""
    ensure_chat_template(tokenizer)
    text = _render(tokenizer, _clean(messages), add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer) -> list[int]:
    """Tokens that end an assistant turn: EOS plus the template's end-of-turn markers."""
    stops = set()
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            stops.add(token_id)
    return sorted(stops)
