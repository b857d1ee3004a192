"""Continuous batching on the engine thread: every active sequence advances in one ``llama_decode`` per step.

Why this shape: on a few CPU cores one decode stream leaves most of a step's matrix work idle, so decoding the
next token of 8 conversations in one batch costs far less than 8 single steps. Each step holds one token per
running lane plus at most ``prefill_chunk`` prompt tokens of the sequences still prefilling (in arrival order),
so a long prompt never stalls the streams already running for more than one chunk.

Sequences live in one unified KV buffer (``kv_unified``), so cells copied between sequences with
``llama_memory_seq_cp`` are shared, not duplicated. Sequence 0 is reserved: it holds the most recent system
prompt, and a new conversation behind it starts from a copy of those cells and prefills only its own tokens.
Longer prefixes (whole finished conversations) come from the byte LRU ``PrefixCache``, restored straight into
the new sequence. Suggestion chips (``branches``) are ordinary sequences: the prompt is prefilled once, then
forked into one lane per chip, each with its own grammar sampler, decoded side by side with everyone else. OpenAI's
``n`` works the same way: the prompt is prefilled once and copied into one lane per choice, each with its own
seed, stop matcher and finish reason (llm/sampling.py holds the per-lane samplers and the log probabilities).

Everything here runs on the engine thread, the only one that touches the llama context.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from upcoach.errors import Overloaded, Unavailable, UpcoachError
from upcoach.llm import admission
from upcoach.llm.base import Chunk, Completion, FinishReason, TokenLogprob, Usage
from upcoach.llm.constrained import GrammarSampler
from upcoach.llm.prefix_cache import PrefixCache, Tokens, common_prefix
from upcoach.llm.sampling import make_sampler, sample, token_logprob
from upcoach.llm.stops import StopMatcher

if TYPE_CHECKING:
    from upcoach.llm.llamacpp import EngineStats, _Job

log = logging.getLogger(__name__)

# A cached prefix must beat what sequence 0 already shares by this many tokens to be worth a restore.
RESTORE_MARGIN = 16
# How many of the most likely first tokens are looked at when choosing the branches' different starts.
FIRST_TOKEN_CANDIDATES = 64
# Completions remembered to measure the service rate (Retry-After, the router's wait estimate).
RATE_WINDOW = 32
PREFIX_SEQ = 0


@dataclass
class Lane:
    """One decoding stream inside the KV buffer: a plain answer has one, ``n`` choices and chips one each."""

    seq_id: int
    sampler: object  # LlamaSampler or GrammarSampler
    token: int = -1  # sampled, not decoded yet
    pos: int = 0  # where ``token`` goes
    generated: list[int] = field(default_factory=list)
    text: bytes = b""  # branch lanes: the line so far
    done: bool = False
    row: int = -1
    index: int = 0  # the choice this lane answers (OpenAI's ``choices[].index``)
    finish: FinishReason = "length"
    matcher: StopMatcher | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    logprob: TokenLogprob | None = None  # of the token just sampled, when the request asked for them


@dataclass
class Sequence:
    job: _Job
    tokens: Tokens
    boundary: int
    max_tokens: int
    stops: tuple[str, ...]
    grammar: str | None
    seq_ids: list[int]
    reserved_cells: int
    seed: int
    prefilled: int = 0
    cached: int = 0
    lanes: list[Lane] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finish: str = "length"

    @property
    def branches(self) -> int:
        return self.job.request.branches

    @property
    def width(self) -> int:
        """Lanes (and sequence ids) this sequence decodes with: one per chip or per choice."""
        return max(1, self.branches, self.job.request.params.n)

    @property
    def decoding(self) -> bool:
        return bool(self.lanes)

    @property
    def n_generated(self) -> int:
        return sum(len(lane.generated) for lane in self.lanes)


@dataclass
class StepStats:
    """What the scheduler did, read by info() and the Prometheus collector (written on the engine thread only)."""

    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    last_batch: int = 0
    last_prefill: int = 0
    last_decode: int = 0
    max_prefill: int = 0  # the most prompt tokens one step has held (never above the chunk)
    max_decode: int = 0  # the most lanes one step has decoded together
    step_ms: float | None = None  # EWMA
    queue_wait_ms: float | None = None  # EWMA
    queue_wait_seconds_sum: float = 0.0
    admitted: int = 0
    prefix_hits: int = 0
    kv_cells: int = 0
    own_prefill: float | None = None  # EWMA of the prompt tokens an admitted sequence had to prefill itself
    preempted: int = 0  # background sequences that gave their slot to a user request
    dropped: int = 0  # background sequences that waited too long and never ran


class Scheduler:
    def __init__(
        self,
        llama: object,
        *,
        parallel: int,
        extra_seqs: int,
        prefill_chunk: int,
        kv_cells: int,
        cache: PrefixCache,
        prefix_min_tokens: int,
        stats: EngineStats,
        model_id: str,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama
        self.parallel = parallel
        self.prefill_chunk = prefill_chunk
        self.kv_cells = kv_cells
        self.cache = cache
        self.prefix_min_tokens = prefix_min_tokens
        self.stats = stats
        self.model_id = model_id
        self.step = StepStats()
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        self._free_ids = list(range(1, 1 + parallel + extra_seqs))
        self._prefix = np.zeros(0, dtype=np.intc)  # the tokens sequence 0 holds
        self._ctx = llama._ctx.ctx  # type: ignore[attr-defined]
        self._memory = llama._ctx.memory  # type: ignore[attr-defined]
        self._vocab = llama._model.vocab  # type: ignore[attr-defined]
        self._n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
        self._batch_size = prefill_chunk + parallel + extra_seqs
        self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._completions: deque[float] = deque(maxlen=RATE_WINDOW)

    def close(self) -> None:
        for sequence in [*self.active, *self.waiting]:
            self.fail(sequence, Unavailable("the local engine stopped"))
        self._lib.llama_batch_free(self._batch)

    # ---- state read by other threads (plain ints and floats: a torn read is harmless) ---------------------------
    @property
    def running(self) -> int:
        return len(self.active)

    def service_rate(self) -> float | None:
        """Completed sequences per second over the last ``RATE_WINDOW`` completions."""
        times = list(self._completions)
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    # ---- admission -------------------------------------------------------------------------------------------
    def enqueue(self, sequence: Sequence) -> None:
        """Into the waiting room by class, then arrival (llm/admission.py)."""
        self.waiting.insert(admission.position(self.waiting, sequence, time.perf_counter()), sequence)

    def prefill_ahead(self) -> int:
        """Prompt tokens the batch and the waiting user requests still have to prefill (read from other threads)."""
        ahead = [s for s in (*self.active, *self.waiting) if not s.job.request.background]
        return sum(len(s.tokens) - s.prefilled for s in ahead if not s.decoding)

    def admit(self) -> None:
        """Move waiting sequences into the batch, in order, while slots, sequence ids and KV cells allow; a user
        request at the head takes the slot of a running background sequence rather than wait for it."""
        for late in admission.expired(self.waiting, time.perf_counter()):
            self.step.dropped += 1
            self.fail(late, Overloaded("background work dropped: it waited too long for a slot"))
        while self.waiting:
            sequence = self.waiting[0]
            if sequence.job.cancel.is_set():
                self.waiting.popleft()
                self._finish_cancelled(sequence)
                continue
            need_ids = sequence.width
            over_budget = self.step.kv_cells + sequence.reserved_cells > self.kv_cells - len(self._prefix)
            if len(self.active) >= self.parallel or len(self._free_ids) < need_ids or (self.active and over_budget):
                preempted = admission.victim(sequence, self.active)
                if preempted is None:
                    return  # in order: nobody overtakes the head of the queue, so nobody starves
                self.step.preempted += 1
                self.fail(preempted, Overloaded("background work preempted by a user request"))
                continue
            self.waiting.popleft()
            sequence.seq_ids = [self._free_ids.pop(0) for _ in range(need_ids)]
            self.step.kv_cells += sequence.reserved_cells
            self.step.admitted += 1
            wait = time.perf_counter() - sequence.job.enqueued
            self.step.queue_wait_seconds_sum += wait
            self.step.queue_wait_ms = _ewma(self.step.queue_wait_ms, wait * 1000)
            sequence.started = time.perf_counter()
            self._reuse_prefix(sequence)
            self.step.own_prefill = _ewma(self.step.own_prefill, len(sequence.tokens) - sequence.prefilled)
            self.active.append(sequence)

    def _reuse_prefix(self, sequence: Sequence) -> None:
        """Start the sequence from the longest known prefix: sequence 0's cells (shared) or a cached state."""
        tokens, seq_id = sequence.tokens, sequence.seq_ids[0]
        limit = len(tokens) - 1  # the last prompt token is always decoded: its logits give the first token
        live = min(common_prefix(self._prefix, tokens), limit)
        entry, shared = self.cache.best(tokens)
        shared = min(shared, limit)
        if entry is not None and shared > live + RESTORE_MARGIN and self._restore(seq_id, entry.state):
            self._lib.llama_memory_seq_rm(self._memory, seq_id, shared, -1)
            sequence.prefilled = shared
        elif live > 0:
            self._lib.llama_memory_seq_cp(self._memory, PREFIX_SEQ, seq_id, 0, live)
            sequence.prefilled = live
        sequence.cached = sequence.prefilled
        if sequence.cached:
            self.step.prefix_hits += 1
        self._share_boundary(sequence)

    def _share_boundary(self, sequence: Sequence) -> None:
        """Once a sequence holds its whole system prompt, sequence 0 holds it too (and the LRU keeps a copy)."""
        b = sequence.boundary
        if b < self.prefix_min_tokens or b >= len(sequence.tokens) or sequence.prefilled < b:
            return
        head = sequence.tokens[:b]
        if len(self._prefix) == b and common_prefix(self._prefix, head) == b:
            return
        self._lib.llama_memory_seq_rm(self._memory, PREFIX_SEQ, -1, -1)
        self._lib.llama_memory_seq_cp(self._memory, sequence.seq_ids[0], PREFIX_SEQ, 0, b)
        self._prefix = head.copy()
        if not self.cache.contains(head):
            self._save(PREFIX_SEQ, head)

    # ---- one step ---------------------------------------------------------------------------------------------
    def run_step(self) -> None:
        """Cancel, build one batch (a token per running lane + a prefill chunk), decode it, sample, emit."""
        for sequence in list(self.active):
            if sequence.job.cancel.is_set():
                sequence.finish = "cancelled"
                self._retire(sequence)
        if not self.active:
            return
        batch = self._batch
        n = 0
        decode_rows: list[tuple[Sequence, Lane]] = []
        for sequence in self.active:
            for lane in sequence.lanes:
                if lane.done:
                    continue
                self._put(n, lane.token, lane.pos, lane.seq_id, True)
                lane.row = n
                decode_rows.append((sequence, lane))
                n += 1
        n_decode = n
        budget = self.prefill_chunk
        prefill_rows: list[tuple[Sequence, int]] = []
        for sequence in self.active:
            if sequence.decoding or budget <= 0:
                continue
            start = sequence.prefilled
            end = min(len(sequence.tokens), start + budget)
            if start < sequence.boundary < end:
                end = sequence.boundary  # stop at the system prompt's end, so sequence 0 can take exactly it
            for pos in range(start, end):
                self._put(n, int(sequence.tokens[pos]), pos, sequence.seq_ids[0], pos == len(sequence.tokens) - 1)
                n += 1
            budget -= end - start
            sequence.prefilled = end
            prefill_rows.append((sequence, n - 1))
        batch.n_tokens = n
        started = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        if code != 0:
            error = Unavailable(f"local generation failed: llama_decode returned {code} for {n} tokens")
            for sequence in list(self.active):
                self.fail(sequence, error)
            return
        for sequence in list(self.active):
            if sequence.job.cancel.is_set():  # left while this step ran: no sampling, its cells go now
                sequence.finish = "cancelled"
                self._retire(sequence)
        for sequence, lane in decode_rows:
            if sequence in self.active:
                self._guarded(sequence, self._advance_lane, sequence, lane)
        for sequence, last_row in prefill_rows:
            if sequence not in self.active:
                continue
            self._share_boundary(sequence)
            if sequence.prefilled == len(sequence.tokens):
                self._guarded(sequence, self._start_decoding, sequence, last_row)
        for sequence in list(self.active):
            if all(lane.done for lane in sequence.lanes) and sequence.decoding:
                self._retire(sequence)
        elapsed_ms = (time.perf_counter() - started) * 1000
        s = self.step
        s.steps += 1
        s.last_batch, s.last_decode, s.last_prefill = n, n_decode, n - n_decode
        s.max_prefill, s.max_decode = max(s.max_prefill, n - n_decode), max(s.max_decode, n_decode)
        s.decode_tokens += n_decode
        s.prefill_tokens += n - n_decode
        s.step_ms = _ewma(s.step_ms, elapsed_ms)

    def _guarded(self, sequence: Sequence, step: Callable[..., None], *args: object) -> None:
        """Run one sequence's part of the step; a failure (a grammar with no way on) ends that sequence only."""
        try:
            step(*args)
        except Exception as exc:
            log.exception("sequence failed")
            self.fail(sequence, Unavailable(f"local generation failed: {exc}"))

    def _advance_lane(self, sequence: Sequence, lane: Lane) -> None:
        self._advance(sequence, lane, self._sample(sequence, lane, lane.row))

    def _put(self, row: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[row] = token
        batch.pos[row] = pos
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = 1 if logits else 0

    def _sample(self, sequence: Sequence, lane: Lane, row: int) -> int:
        token = sample(self.llama, lane.sampler, row)
        top = sequence.job.request.params.logprobs
        if top is not None:
            logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))
            lane.logprob = token_logprob(logits, token, top, self.piece)
        return token

    def _start_decoding(self, sequence: Sequence, row: int) -> None:
        """The prompt is in: sample the first token of each choice (for chips, fork one lane per distinct first
        token). Every choice's lane starts from a copy of the prompt's cells and its own seed."""
        sequence.first_token_at = time.perf_counter()
        position = len(sequence.tokens)
        params = sequence.job.request.params
        if sequence.branches <= 1:
            for index, seq_id in enumerate(sequence.seq_ids):
                if index > 0:
                    self._lib.llama_memory_seq_cp(self._memory, sequence.seq_ids[0], seq_id, 0, position)
                sampler = make_sampler(self.llama, params, sequence.grammar, sequence.seed + index)
                lane = Lane(seq_id, sampler, pos=position, index=index, matcher=StopMatcher(sequence.stops))
                sequence.lanes.append(lane)
                self._advance(sequence, lane, self._sample(sequence, lane, row))
            return
        assert sequence.grammar is not None
        first = GrammarSampler(self.llama, sequence.grammar, temperature=params.temperature, top_p=params.top_p,
                               seed=params.seed or 0)  # fmt: skip
        try:
            firsts = self._first_tokens(first, row, sequence.branches)
        finally:
            first.close()
        for index, seq_id in enumerate(sequence.seq_ids):
            if index >= len(firsts):  # fewer distinct starts than asked: give the spare ids back now
                self._release_id(seq_id)
                continue
            if index > 0:
                self._lib.llama_memory_seq_cp(self._memory, sequence.seq_ids[0], seq_id, 0, position)
            sampler = GrammarSampler(self.llama, sequence.grammar, temperature=params.temperature,
                                     top_p=params.top_p, seed=(params.seed or 0) + index)  # fmt: skip
            sampler.accept(firsts[index])
            lane = Lane(seq_id, sampler, pos=position)
            sequence.lanes.append(lane)
            self._advance(sequence, lane, firsts[index])
        sequence.seq_ids = sequence.seq_ids[: len(firsts)]

    def _advance(self, sequence: Sequence, lane: Lane, token: int) -> None:
        """Take the lane's newly sampled token: emit its text, or end the lane (end of text, stop, limit)."""
        channel = sequence.job.channel
        ended = bool(self._lib.llama_vocab_is_eog(self._vocab, token))
        if sequence.branches > 1:
            if not ended:
                lane.generated.append(token)
                lane.text += self.piece(token)
            line, newline, _ = lane.text.partition(b"\n")
            if ended or newline or len(lane.generated) >= sequence.max_tokens:
                lane.done = True
                if line:
                    channel.put(Chunk(line.decode("utf-8", errors="replace") + "\n"))
                return
            lane.token, lane.pos = token, lane.pos + (1 if lane.token >= 0 else 0)
            return
        if ended:
            self._end_lane(sequence, lane, "stop")
            return
        lane.generated.append(token)
        assert lane.matcher is not None
        emit, stopped = lane.matcher.feed(lane.decoder.decode(self.piece(token)))
        logprobs = (lane.logprob,) if lane.logprob is not None else ()
        if emit or logprobs:
            channel.put(Chunk(emit, index=lane.index, logprobs=logprobs))
        if stopped:
            self._end_lane(sequence, lane, "stop")
        elif len(lane.generated) >= sequence.max_tokens:
            self._end_lane(sequence, lane, "length")
        else:
            lane.pos += 1 if lane.token >= 0 else 0
            lane.token = token

    def _end_lane(self, sequence: Sequence, lane: Lane, finish: FinishReason) -> None:
        """A choice ended: the rest of its text (held back by the stop matcher) and, for choices after the first,
        its finish reason go out now; choice 0's finish reason is the final chunk's."""
        lane.done = True
        lane.finish = finish
        if lane.index == 0:
            sequence.finish = finish
        assert lane.matcher is not None
        tail = lane.matcher.flush(lane.decoder.decode(b"", final=True))
        if tail or lane.index > 0:
            sequence.job.channel.put(Chunk(tail, index=lane.index, finish=finish if lane.index > 0 else None))

    def _first_tokens(self, sampler: GrammarSampler, row: int, n: int) -> list[int]:
        """Up to ``n`` distinct first tokens for the branches, most likely first, each allowed by the grammar.

        Two tokens where one's text starts the other's ("I" and "It", "Help" and "Hel") would likely grow into
        the same reply, so only the more likely one is kept.
        """
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))
        top = np.argpartition(logits, -FIRST_TOKEN_CANDIDATES)[-FIRST_TOKEN_CANDIDATES:]
        top = top[np.argsort(-logits[top])]
        chosen: list[int] = []
        keys: list[str] = []
        for token in top[sampler.allowed(top)]:
            key = self.piece(int(token)).decode("utf-8", errors="ignore").strip().casefold()
            if not key or any(key.startswith(k) or k.startswith(key) for k in keys):
                continue
            chosen.append(int(token))
            keys.append(key)
            if len(chosen) == n:
                break
        if not chosen:
            raise RuntimeError("the grammar allows none of the likely first tokens")
        return chosen

    # ---- the end of a sequence --------------------------------------------------------------------------------
    def _retire(self, sequence: Sequence) -> None:
        """Send the final chunk, keep the conversation in the LRU, free the sequence's cells and ids."""
        ended = time.perf_counter()
        cancelled = sequence.finish == "cancelled"
        if sequence.branches > 1:
            sequence.finish = "cancelled" if cancelled else "stop"
        if not cancelled and sequence.grammar is None and sequence.lanes:
            # A constrained answer (chips, JSON) is a one-shot: nobody continues it, so it is not remembered.
            lane = sequence.lanes[0]
            held = np.concatenate([sequence.tokens, np.asarray(lane.generated[:-1], dtype=np.intc)])
            if len(held) >= self.prefix_min_tokens and len(held) > len(sequence.tokens):
                self._save(lane.seq_id, held)
        self._free(sequence)
        n_generated = sequence.n_generated
        first = sequence.first_token_at
        ttft_ms = (first - sequence.started) * 1000 if first else None
        decode_s = ended - first if first else 0.0
        prefill = len(sequence.tokens) - sequence.cached
        self.stats.observe(
            ttft_ms if sequence.cached > 0 else None,
            (n_generated - 1) / decode_s if n_generated > 8 and decode_s > 0 and sequence.width == 1 else None,
            prefill / (ttft_ms / 1000) if ttft_ms and prefill > 64 else None,
            (ended - sequence.started) * 1000 if not cancelled else None,
        )
        if cancelled:
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1
            self._completions.append(ended)
        sequence.job.channel.put(
            Chunk(
                final=Completion(
                    text="",
                    finish_reason=sequence.finish,
                    usage=Usage(len(sequence.tokens), n_generated, sequence.cached),
                    model=self.model_id,
                    first_token_ms=ttft_ms,
                    total_ms=(ended - sequence.job.enqueued) * 1000,
                    queue_ms=(sequence.started - sequence.job.enqueued) * 1000,
                )
            )
        )

    def _finish_cancelled(self, sequence: Sequence) -> None:
        """A waiting sequence whose client left: it never held cells."""
        self.stats.cancelled += 1
        sequence.finish = "cancelled"

    def fail(self, sequence: Sequence, error: UpcoachError) -> None:
        if sequence in self.active:
            self._free(sequence)
        elif sequence in self.waiting:
            self.waiting.remove(sequence)
        sequence.job.channel.put(error)

    def _free(self, sequence: Sequence) -> None:
        for lane in sequence.lanes:
            close = getattr(lane.sampler, "close", None)
            if close is not None:
                close()
        for seq_id in sequence.seq_ids:
            self._release_id(seq_id)
        sequence.seq_ids = []
        self.step.kv_cells -= sequence.reserved_cells
        self.active.remove(sequence)

    def _release_id(self, seq_id: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._free_ids.append(seq_id)

    # ---- helpers ----------------------------------------------------------------------------------------------
    def piece(self, token: int) -> bytes:
        """The token's text bytes, memoised: the vocabulary is fixed, and this runs once per generated token."""
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            if n < 0:  # the piece is longer than the buffer: llama.cpp says how long
                buffer = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            piece = buffer.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def _save(self, seq_id: int, tokens: Tokens) -> None:
        size = self._lib.llama_state_seq_get_size(self._ctx, seq_id)
        buffer = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(self._ctx, buffer, size, seq_id)
        if written:
            self.cache.put(tokens, bytes(memoryview(buffer)[:written]))

    def _restore(self, seq_id: int, state: bytes) -> bool:
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self._lib.llama_state_seq_set_data(self._ctx, buffer, len(state), seq_id) == 0:
            self._lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            return False
        return True


def new_sequence(job: _Job, tokens: Tokens, boundary: int, max_tokens: int, stops: tuple[str, ...],
                 grammar: str | None) -> Sequence:  # fmt: skip
    """A sequence for ``job``, not admitted yet; its KV reservation covers the prompt and every lane's answer."""
    params = job.request.params
    lanes = max(1, job.request.branches, params.n)
    seed = params.seed if params.seed is not None else random.getrandbits(31)
    return Sequence(
        job=job,
        tokens=tokens,
        boundary=boundary,
        max_tokens=max_tokens,
        stops=stops,
        grammar=grammar,
        seq_ids=[],
        reserved_cells=len(tokens) + lanes * max_tokens,
        seed=seed,
    )


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else 0.8 * old + 0.2 * new
