"""Preference (DPO) data: the JSONL that OpenAI and Azure take for ``method: dpo``.

One line per comparison (OpenAI fine-tuning guide, "Preference fine-tuning" data format,
read 2026-11-25)::

    {"input": {"messages": [...]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

Each side is encoded as the conversation ``input.messages + output`` with the chat
template; only the output's assistant tokens (and the end-of-turn/EOS the mask adds)
are labelled, so the DPO log-probabilities cover exactly the answers being compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune import errors
from local_backend.chat_format import EncodeStats, Encoded, encode_chat

Pair = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]  # prompt, chosen, rejected


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded
    # The reference model's summed answer log-probabilities (chosen, rejected), once precomputed
    # (local_backend/dpo_reference.py); None: computed live with each micro-batch.
    reference: tuple[float, float] | None = None

    @property
    def tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


def _output(record: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = record.get(key)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not all(m.get("role") == "assistant" for m in value):
        raise errors.DatasetError(f"{where}: '{key}' must be a list of assistant messages")
    return value


def read_preference_jsonl(path: Path) -> list[Pair]:
    pairs: list[Pair] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
            prompt = record["input"]["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise errors.DatasetError(
                f"{where}: not a preference example with input.messages, preferred_output and "
                f"non_preferred_output ({exc})"
            ) from exc
        pairs.append((prompt, _output(record, "preferred_output", where), _output(record, "non_preferred_output", where)))
    if not pairs:
        raise errors.DatasetError(f"{path}: no examples")
    return pairs


def _encode_answer(tokenizer, prompt, answer, max_length: int) -> Encoded:  # type: ignore[no-untyped-def]
    # Assistant turns inside the prompt are context, not the answer being compared.
    return encode_chat(tokenizer, prompt + answer, max_length=max_length, train_from=len(prompt))


def encode_pairs(tokenizer, pairs: list[Pair], max_length: int) -> tuple[list[EncodedPair], EncodeStats]:  # type: ignore[no-untyped-def]
    stats = EncodeStats()
    encoded: list[EncodedPair] = []
    for prompt, chosen, rejected in pairs:
        pair = EncodedPair(
            _encode_answer(tokenizer, prompt, chosen, max_length), _encode_answer(tokenizer, prompt, rejected, max_length)
        )
        stats.examples += 1
        stats.truncated += int(pair.chosen.truncated or pair.rejected.truncated)
        if not pair.chosen.trained_tokens or not pair.rejected.trained_tokens:
            stats.dropped += 1  # an answer cut away entirely: nothing to compare
            continue
        stats.tokens += pair.tokens
        stats.trained_tokens += pair.chosen.trained_tokens + pair.rejected.trained_tokens
        encoded.append(pair)
    return encoded, stats
