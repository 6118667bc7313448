"""Training data: chat JSONL -> encoded examples -> deterministic batches.

Two batch layouts:

- padded: one row per example, right-padded, with an attention mask; on CUDA the epoch
  order is length-grouped (see :func:`length_grouped`) so rows of a batch are similar in
  length and padding stays small;
- padding-free: every sequence of the micro-batch back to back in ONE row, position ids
  restarting at 0 per sequence, and cumulative sequence lengths for variable-length
  attention (:mod:`local_backend.attention`); no padding token is computed at all.
"""


from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune import errors
from local_backend.chat_format import IGNORE_INDEX, EncodeStats, Encoded, encode_chat


def read_chat_jsonl(path: Path) -> list[list[dict[str, Any]]]:
    conversations = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = record["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise errors.DatasetError(f"{path}:{number}: not a chat example with 'messages' ({exc})") from exc
        if not any(m.get("role") == "assistant" for m in messages):
            raise errors.DatasetError(f"{path}:{number}: no assistant message to learn from")
        conversations.append(messages)
    if not conversations:
        raise errors.DatasetError(f"{path}: no examples")
    return conversations


def split_validation(
    conversations: list[list[dict[str, Any]]], fraction: float, seed: int
) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(conversations) * fraction)) if len(conversations) > 1 else 0
    held = set(order[:count])
    train = [c for i, c in enumerate(conversations) if i not in held]
    valid = [c for i, c in enumerate(conversations) if i in held]
    return train, valid


def encode_all(tokenizer, conversations, max_length: int) -> tuple[list[Encoded], EncodeStats]:
    stats = EncodeStats()
    encoded = []
    for messages in conversations:
        item = encode_chat(tokenizer, messages, max_length=max_length)
        stats.examples += 1
        stats.truncated += int(item.truncated)
        if item.trained_tokens == 0:
            stats.dropped += 1  # truncation cut every assistant token: nothing to learn
            continue
        stats.tokens += len(item.input_ids)
        stats.trained_tokens += item.trained_tokens
        encoded.append(item)
    return encoded, stats


@dataclass
class Row:
    """One row of a batch: ids, labels and position ids (reset per packed example)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def rows_padded(examples: list[Encoded]) -> list[Row]:
    return [Row(e.input_ids, e.labels, list(range(len(e.input_ids)))) for e in examples]


def rows_packed(examples: list[Encoded], max_length: int) -> list[Row]:
    """Greedy packing in the given order. Position ids restart at 0 for each example,
    which (with no attention mask and no cache) makes transformers build a
    block-diagonal mask: packed examples cannot see each other. The first label of each
    example is ignored so no token predicts across a boundary."""
    rows: list[Row] = []
    current = Row([], [], [])
    for example in examples:
        if current.input_ids and len(current.input_ids) + len(example.input_ids) > max_length:
            rows.append(current)
            current = Row([], [], [])
        current.input_ids += example.input_ids
        current.labels += [IGNORE_INDEX] + example.labels[1:]
        current.position_ids += list(range(len(example.input_ids)))
    if current.input_ids:
        rows.append(current)
    return rows


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch) so resume replays it."""
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def length_grouped(order: list[int], lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[int]:
    """Length-grouped batching: within mega-batches of 50 batches, sort by length (longest
    first), cut into batches, then shuffle the batches. Padding shrinks to the length
    differences inside a batch; the order stays a pure function of (seed, epoch)."""
    mega = max(1, 50 * batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    random.Random(seed * 1_000_003 + epoch + 7).shuffle(batches)
    return [i for batch in batches for i in batch]


def collate_padding_free(sequences: list[Row]):
    """All sequences of a micro-batch in one row. A row's position ids may already hold
    several packed examples (restarts at 0); every restart starts a new attention segment.
    Labels of each row start ignored at segment starts (see rows_packed), so no token is
    predicted across a boundary. ``sequence_ids`` maps each token to its input row."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    owners: list[int] = []
    for index, row in enumerate(sequences):
        ids += row.input_ids
        labels += [IGNORE_INDEX] + row.labels[1:]
        positions += row.position_ids
        owners += [index] * len(row.input_ids)
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "sequence_ids": torch.tensor([owners], dtype=torch.long),
        "cu_seq_lens_q": torch.tensor(starts, dtype=torch.int32),
        "cu_seq_lens_host": tuple(starts),  # the same, for the exact attention path: no read back from the GPU
        "max_length_q": max(b - a for a, b in zip(starts, starts[1:])),
    }


def collate(rows: list[Row], pad_id: int, *, packed: bool):
    """Right-padded tensors. Packed batches carry no attention mask (see rows_packed); the
    padding tail gets its own position run so it forms a separate block."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids, labels, positions, mask = [], [], [], []
    for row in rows:
        pad = width - len(row.input_ids)
        ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE_INDEX] * pad)
        positions.append(row.position_ids + list(range(pad)))
        mask.append([1] * len(row.input_ids) + [0] * pad)
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
        "sequence_ids": torch.arange(len(rows)).unsqueeze(1).expand(len(rows), width).clone(),
    }
    if not packed:
        batch["attention_mask"] = torch.tensor(mask, dtype=torch.long)
        # Padded rows keep ordinary positions (0..n-1 then the pad run, masked anyway).
    return batch
