"""Per-sequence sampling for the batch scheduler (llm/scheduler.py): one sampler per decoding lane, and the log
probabilities OpenAI's ``logprobs``/``top_logprobs`` return.

A lane samples from its own batch row. Plain answers use llama.cpp's sampler chain (logit bias, penalties, top-k,
top-p, min-p, temperature, seeded draw); constrained ones (JSON, tool calls, chips) the ``GrammarSampler``, which
keeps the same chain and asks the grammar only about the drawn token. Log probabilities are of the model's own
distribution at that step (a log-softmax of the raw logits, before bias, penalties or temperature), as OpenAI
reports them.

Runs on the engine thread, the only one that touches the llama context.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from upcoach.llm.base import GenerationParams, TokenLogprob, TopLogprob
from upcoach.llm.constrained import GrammarSampler

PENALTY_LAST_N = 64  # generated tokens the repeat/presence/frequency penalties look back over
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on top_logprobs
MAX_CHOICES = 8  # OpenAI's n: choices per request, each decoded in a lane (and sequence) of its own


def make_sampler(llama: object, params: GenerationParams, grammar: str | None, seed: int) -> object:
    """The sampler of one lane: a ``GrammarSampler`` when the output is constrained, else llama.cpp's chain."""
    if grammar is not None:
        return GrammarSampler(
            llama, grammar, temperature=params.temperature, top_p=params.top_p, seed=seed,
            presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
            logit_bias=params.logit_bias,
        )  # fmt: skip
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
    if params.logit_bias:
        sampler.add_logit_bias(n_vocab, dict(params.logit_bias))
    if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
        # Over the tokens this sequence generated (the sampler sees each one it picks), the last 64 of them.
        sampler.add_penalties(
            n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
        )
    sampler.add_top_k(40)
    if params.temperature <= 0:
        sampler.add_greedy()
    else:
        sampler.add_top_p(params.top_p, 1)
        sampler.add_min_p(0.05, 1)
        sampler.add_temp(params.temperature)
        sampler.add_dist(seed)
    return sampler


def sample(llama: object, sampler: object, row: int) -> int:
    """The next token of a lane from the logits of batch row ``row`` (accepted into the sampler's state)."""
    if isinstance(sampler, GrammarSampler):
        return sampler.sample(row)
    return int(sampler.sample(llama._ctx, row))  # type: ignore[attr-defined]


def token_logprob(logits: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """``token``'s log probability under ``logits`` (one batch row), with the ``top`` most likely tokens."""
    row = logits.astype(np.float64, copy=False)
    peak = float(row.max())
    log_total = peak + float(np.log(np.exp(row - peak).sum()))
    alternatives: tuple[TopLogprob, ...] = ()
    if top > 0:
        best = np.argpartition(row, -top)[-top:]
        best = best[np.argsort(-row[best], kind="stable")]
        alternatives = tuple(_top(int(t), float(row[t]) - log_total, piece) for t in best)
    raw = piece(token)
    return TokenLogprob(_text(raw), min(0.0, float(row[token]) - log_total), raw, alternatives)


def _top(token: int, logprob: float, piece: Callable[[int], bytes]) -> TopLogprob:
    raw = piece(token)
    return TopLogprob(_text(raw), min(0.0, logprob), raw)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")
