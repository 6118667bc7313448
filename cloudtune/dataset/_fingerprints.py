"""A compact set of 64-bit example fingerprints, each with the line it came from.

Duplicate and leakage detection must remember every example seen. A Python
dict of ints costs ~100 bytes an entry; this open-addressing table stores the
fingerprint and the line in two machine arrays (12 bytes a slot, 17-34 bytes
an example, ~50 while it doubles), so a million examples cost tens of MB,
whatever the size of each example.
"""

from __future__ import annotations

from array import array

_MASK = (1 << 64) - 1
_LOAD = 0.7  # grow past this fill ratio: linear probing stays short, few empty slots


class FingerprintTable:
    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size * _LOAD < capacity:
            size <<= 1
        self._keys = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._used = 0

    def __len__(self) -> int:
        return self._used

    @staticmethod
    def key(fingerprint: int) -> int:
        # 0 marks an empty slot, so fold it onto 1.
        return (fingerprint & _MASK) or 1

    def get(self, fingerprint: int) -> int | None:
        """The line first seen with this fingerprint, or None."""
        key = self.key(fingerprint)
        keys = self._keys
        mask = len(keys) - 1
        slot = (key ^ (key >> 29)) & mask
        while True:
            current = keys[slot]
            if current == 0:
                return None
            if current == key:
                return self._lines[slot]
            slot = (slot + 1) & mask

    def add(self, fingerprint: int, line: int) -> int | None:
        """Remember ``fingerprint`` at ``line``; return the earlier line if it was already there."""
        line = min(line, 0xFFFFFFFF)
        key = self.key(fingerprint)
        keys = self._keys
        mask = len(keys) - 1
        slot = (key ^ (key >> 29)) & mask
        while True:
            current = keys[slot]
            if current == 0:
                break
            if current == key:
                return self._lines[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._used += 1
        if self._used > len(keys) * _LOAD:
            self._grow()
        return None

    def items(self):
        """(stored key, line) of every entry, in slot order."""
        return ((key, line) for key, line in zip(self._keys, self._lines) if key)

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        size = len(old_keys) * 2
        self._keys = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        mask = size - 1
        for key, line in zip(old_keys, old_lines):
            if key:
                slot = (key ^ (key >> 29)) & mask
                while self._keys[slot]:
                    slot = (slot + 1) & mask
                self._keys[slot] = key
                self._lines[slot] = line
