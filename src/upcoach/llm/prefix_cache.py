"""LRU of saved KV-cache prefixes, bounded by bytes.

Each entry is the llama.cpp sequence state (KV cells only, no logits: ~12 KB per token for a 0.5B model) of a
token prefix, e.g. the app's coaching system prompt. A new conversation that starts with a saved prefix restores
it in a few milliseconds instead of paying ~1.5 s of prefill.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.intc]


def common_prefix(a: Tokens, b: Tokens) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


@dataclass
class PrefixEntry:
    tokens: Tokens
    state: bytes

    @property
    def nbytes(self) -> int:
        return len(self.state) + self.tokens.nbytes


class PrefixCache:
    """Thread-confined (the engine's worker thread owns it); not safe for concurrent use."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[bytes, PrefixEntry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def contains(self, tokens: Tokens) -> bool:
        return tokens.tobytes() in self._entries

    def best(self, tokens: Tokens) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` and that shared length (LRU-touched on use)."""
        best_key: bytes | None = None
        best_len = 0
        for key, entry in self._entries.items():
            shared = common_prefix(entry.tokens, tokens)
            if shared > best_len:
                best_key, best_len = key, shared
        if best_key is None:
            self.misses += 1
            return None, 0
        self.hits += 1
        self._entries.move_to_end(best_key)
        return self._entries[best_key], best_len

    def put(self, tokens: Tokens, state: bytes) -> None:
        entry = PrefixEntry(tokens.copy(), state)
        if entry.nbytes > self.capacity_bytes:
            return
        key = tokens.tobytes()
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.capacity_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
