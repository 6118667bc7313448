"""A compact set of 64-bit example fingerprints, each with the line it came from.

Duplicate and leakage detection must remember every example seen. A Python
dict of ints costs ~100 bytes an entry; this open-addressing table stores the
fingerprint and the line in two machine arrays (12 bytes a slot, 17-34 bytes
an example), so a million examples cost tens of MB, whatever the size of each
example.

It is split into 16 shards (by the fingerprint's low bits), each growing on
its own: when a shard doubles, its old and new arrays live side by side for a
moment, and that moment's extra memory is a sixteenth of the table, not all
of it, so the peak stays close to the table's own size.
"""

from __future__ import annotations

from array import array

_MASK = (1 << 64) - 1
_LOAD = 0.7  # grow past this fill ratio: linear probing stays short, few empty slots
_SHARD_BITS = 4
_SHARDS = 1 << _SHARD_BITS
_SHARD_MASK = _SHARDS - 1


def _slot(key: int, mask: int) -> int:
    # The low bits chose the shard; mix the rest into the slot.
    high = key >> _SHARD_BITS
    return (high ^ (high >> 29)) & mask


class _Shard:
    __slots__ = ("keys", "lines", "used")

    def __init__(self, capacity: int) -> None:
        size = 8
        while size * _LOAD < capacity:
            size <<= 1
        self.keys = array("Q", bytes(8 * size))
        self.lines = array("I", bytes(4 * size))
        self.used = 0

    def grow_to(self, entries: int) -> None:
        size = len(self.keys)
        while entries > size * _LOAD:
            size <<= 1
        if size == len(self.keys):
            return
        old_keys, old_lines = self.keys, self.lines
        self.keys = keys = array("Q", bytes(8 * size))
        self.lines = lines = array("I", bytes(4 * size))
        mask = size - 1
        for key, line in zip(old_keys, old_lines):
            if key:
                slot = _slot(key, mask)
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot] = key
                lines[slot] = line


class FingerprintTable:
    def __init__(self, capacity: int = 1024) -> None:
        per_shard = max(1, capacity // _SHARDS)
        self._shards = [_Shard(per_shard) for _ in range(_SHARDS)]

    def __len__(self) -> int:
        return sum(shard.used for shard in self._shards)

    @staticmethod
    def key(fingerprint: int) -> int:
        # 0 marks an empty slot, so fold it onto 1.
        return (fingerprint & _MASK) or 1

    def get(self, fingerprint: int) -> int | None:
        """The line first seen with this fingerprint, or None."""
        key = (fingerprint & _MASK) or 1
        shard = self._shards[key & _SHARD_MASK]
        keys = shard.keys
        mask = len(keys) - 1
        slot = _slot(key, mask)
        while True:
            current = keys[slot]
            if current == 0:
                return None
            if current == key:
                return shard.lines[slot]
            slot = (slot + 1) & mask

    def add(self, fingerprint: int, line: int) -> int | None:
        """Remember ``fingerprint`` at ``line``; return the earlier line if it was already there."""
        key = (fingerprint & _MASK) or 1
        shard = self._shards[key & _SHARD_MASK]
        keys = shard.keys
        mask = len(keys) - 1
        slot = _slot(key, mask)
        while True:
            current = keys[slot]
            if current == 0:
                break
            if current == key:
                return shard.lines[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        shard.lines[slot] = min(line, 0xFFFFFFFF)
        shard.used += 1
        if shard.used > len(keys) * _LOAD:
            shard.grow_to(shard.used + 1)
        return None

    def entries(self) -> tuple[array, array]:
        """(keys, lines) of the entries only: what a worker sends back (no empty slots)."""
        keys, lines = array("Q"), array("I")
        for shard in self._shards:
            for key, line in zip(shard.keys, shard.lines):
                if key:
                    keys.append(key)
                    lines.append(line)
        return keys, lines

    def absorb(self, entries: tuple[array, array], line_offset: int) -> list[tuple[int, int]]:
        """Add ``entries`` (another table's, from a later part of the same
        file), their lines shifted by ``line_offset``; entries already here
        keep their line. Returns ``(line in the later part, key)`` for those:
        the examples that part first saw but that repeat an earlier part."""
        other_keys, other_lines = entries
        self.reserve(len(self) + len(other_keys))
        shards = self._shards
        repeated = []
        for key, line in zip(other_keys, other_lines):
            shard = shards[key & _SHARD_MASK]
            keys = shard.keys
            mask = len(keys) - 1
            slot = _slot(key, mask)
            while True:  # the probe of add(), inlined: this loop runs once per example
                current = keys[slot]
                if current == 0:
                    keys[slot] = key
                    shard.lines[slot] = min(line + line_offset, 0xFFFFFFFF)
                    shard.used += 1
                    if shard.used > len(keys) * _LOAD:  # more than reserved landed here
                        shard.grow_to(shard.used + 1)
                    break
                if current == key:
                    repeated.append((line, key))
                    break
                slot = (slot + 1) & mask
        return repeated

    def reserve(self, entries: int) -> None:
        """Room for about ``entries`` in all, made now rather than while growing."""
        share = entries // _SHARDS
        for shard in self._shards:
            shard.grow_to(max(shard.used, share))
