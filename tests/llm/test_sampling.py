"""Log probabilities of a batch row (llm/sampling.py) and how the engine joins a batch's chunks per choice."""

from __future__ import annotations

import math

import numpy as np

from upcoach.llm.base import Chunk, TokenLogprob
from upcoach.llm.llamacpp import _merged
from upcoach.llm.sampling import token_logprob

PIECES = {0: b"a", 1: b"b", 2: b"\xe2\x82", 3: b"d"}


def test_logprobs_are_a_log_softmax_of_the_raw_logits_with_the_best_alternatives_first() -> None:
    logits = np.asarray([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    entry = token_logprob(logits, 2, 3, PIECES.__getitem__)
    expected = logits.astype(np.float64) - math.log(np.exp(logits.astype(np.float64)).sum())
    assert math.isclose(entry.logprob, expected[2], rel_tol=1e-9)
    assert [t.raw for t in entry.top] == [b"b", b"\xe2\x82", b"a"]
    assert [round(t.logprob, 9) for t in entry.top] == [round(v, 9) for v in sorted(expected, reverse=True)[:3]]
    assert entry.raw == b"\xe2\x82" and entry.token == "\ufffd"  # half a character: its bytes are kept exactly
    assert token_logprob(logits, 1, 0, PIECES.__getitem__).top == ()


def test_a_large_vocabulary_row_stays_finite() -> None:
    logits = np.full(151_936, -30.0, dtype=np.float32)
    logits[7] = 60.0  # exp(60) overflows float32: the log-sum-exp is taken around the maximum
    entry = token_logprob(logits, 7, 2, lambda t: b"x")
    assert -1e-9 < entry.logprob <= 0 and all(math.isfinite(t.logprob) for t in entry.top)


def test_a_batch_is_joined_per_choice_in_order() -> None:
    lp = TokenLogprob("a", -0.1, b"a")
    chunks = [Chunk("a", logprobs=(lp,)), Chunk("b", logprobs=(lp,)), Chunk("x", index=1), Chunk("", index=1,
              finish="stop"), Chunk("c"), Chunk("y", index=1)]  # fmt: skip
    merged = _merged(chunks)
    assert [(c.index, c.text, len(c.logprobs), c.finish) for c in merged] == [
        (0, "ab", 2, None), (1, "x", 0, "stop"), (0, "c", 0, None), (1, "y", 0, None),
    ]  # fmt: skip
