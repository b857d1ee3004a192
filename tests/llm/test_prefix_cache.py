from __future__ import annotations

import numpy as np

from upcoach.llm.prefix_cache import PrefixCache, common_prefix


def toks(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.intc)


def test_common_prefix() -> None:
    assert common_prefix(toks(1, 2, 3), toks(1, 2, 4)) == 2
    assert common_prefix(toks(1, 2), toks(1, 2, 3)) == 2
    assert common_prefix(toks(), toks(1)) == 0
    assert common_prefix(toks(5), toks(1)) == 0


def test_best_picks_longest_shared_prefix() -> None:
    cache = PrefixCache(1 << 20)
    cache.put(toks(1, 2), b"short")
    cache.put(toks(1, 2, 3, 4), b"long")
    cache.put(toks(9, 9, 9), b"other")
    entry, shared = cache.best(toks(1, 2, 3, 7))
    assert entry is not None and entry.state == b"long" and shared == 3
    assert cache.best(toks(8))[0] is None


def test_lru_eviction_respects_byte_budget() -> None:
    cache = PrefixCache(capacity_bytes=250)
    cache.put(toks(1), b"a" * 100)
    cache.put(toks(2), b"b" * 100)
    cache.best(toks(1))  # touch 1: entry 2 is now least recently used
    cache.put(toks(3), b"c" * 100)
    assert cache.contains(toks(1)) and cache.contains(toks(3))
    assert not cache.contains(toks(2))
    assert cache.nbytes <= 250


def test_entry_larger_than_capacity_is_not_kept() -> None:
    cache = PrefixCache(capacity_bytes=10)
    cache.put(toks(1), b"x" * 100)
    assert len(cache) == 0 and cache.nbytes == 0


def test_replacing_an_entry_keeps_accounting_exact() -> None:
    cache = PrefixCache(1000)
    cache.put(toks(1, 2), b"x" * 10)
    cache.put(toks(1, 2), b"y" * 20)
    assert len(cache) == 1
    assert cache.nbytes == 20 + toks(1, 2).nbytes
