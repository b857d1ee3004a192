"""In-process llama.cpp engine: one engine thread owns the model and serves many conversations at once.

Why this shape: requests arrive on the event loop and are handed to the engine thread through a queue; that
thread runs the continuous-batching ``Scheduler`` (llm/scheduler.py), which advances every active sequence in one
``llama_decode`` per step. Admission is bounded twice: ``parallel`` sequences in the batch, ``queue_depth`` more
waiting; one more is refused at once with 429 and a Retry-After from the measured service rate. Tokens reach the
event loop through a ``Channel`` that wakes the loop once per batch, so streaming costs the engine thread almost
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from upcoach.errors import ContextLengthExceeded, InvalidRequest, Overloaded, Unavailable, UpcoachError
from upcoach.llm.admission import drain_seconds, retry_after_seconds, ttft_estimate_ms
from upcoach.llm.base import (
    BackendInfo,
    ChatRequest,
    Chunk,
    Completion,
    Health,
    collect,
)
from upcoach.llm.channel import Channel
from upcoach.llm.prefix_cache import PrefixCache
from upcoach.llm.prompt import PromptFormatter, RenderedPrompt
from upcoach.llm.sampling import MAX_CHOICES
from upcoach.llm.scheduler import Scheduler, Sequence, new_sequence

log = logging.getLogger(__name__)

# Parallel one-line answers per request (``ChatRequest.branches``): suggestion chips ask for at most 5. Each
# branch is a sequence of its own; the context holds this many sequences beyond ``parallel`` for them.
MAX_BRANCHES = 5
# Prompt tokens prefilled per step beside the running sequences' decode tokens (UPCOACH_PREFILL_CHUNK).
DEFAULT_PREFILL_CHUNK = 128
# KV cache bytes per token assumed when choosing the default ``parallel`` before a model is loaded (generous:
# ~10x a 0.5B model's 12 KB, about a 7B model with grouped-query attention).
KV_BYTES_PER_TOKEN_GUESS = 128 << 10


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    model_id: str
    threads: int
    context_size: int = 4096
    batch_size: int = 512
    queue_depth: int = 16
    parallel: int = 1
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    prefix_cache_bytes: int = 256 << 20
    prefix_min_tokens: int = 32
    default_max_tokens: int = 512


@dataclass
class EngineStats:
    """Live measurements the routing engine reads (EWMA, alpha 0.2)."""

    ttft_ms: float | None = None
    decode_tps: float | None = None
    prefill_tps: float | None = None
    service_ms: float | None = None
    completed: int = 0
    cancelled: int = 0

    def observe(
        self, ttft_ms: float | None, decode_tps: float | None, prefill_tps: float | None, service_ms: float | None
    ) -> None:
        def ewma(old: float | None, new: float | None) -> float | None:
            if new is None:
                return old
            return new if old is None else 0.8 * old + 0.2 * new

        self.ttft_ms = ewma(self.ttft_ms, ttft_ms)
        self.decode_tps = ewma(self.decode_tps, decode_tps)
        self.prefill_tps = ewma(self.prefill_tps, prefill_tps)
        self.service_ms = ewma(self.service_ms, service_ms)


@dataclass
class _Job:
    request: ChatRequest
    channel: Channel[Chunk | UpcoachError]
    enqueued: float = field(default_factory=time.perf_counter)
    cancel: threading.Event = field(default_factory=threading.Event)


_SHUTDOWN = object()


class LlamaCppEngine:
    """The local backend. ``start()`` loads the model on the worker thread; ``stop()`` ends it."""

    kind = "local"
    supports_grammar = True
    supports_branches = True

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._pending = 0  # streams admitted and not closed; touched on the event loop only
        self._background = 0  # the same for background work (ChatRequest.background), which never fills the room
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._load_error: str | None = None
        self._llama: object | None = None
        self._formatter: PromptFormatter | None = None
        self._cache = PrefixCache(config.prefix_cache_bytes)
        self._scheduler: Scheduler | None = None
        self._grammars: set[str] = set()  # GBNF texts llama.cpp parsed; touched on the worker only
        self.name = f"local:{config.model_id}"

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        loaded = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._run, args=(loaded,), name="llama-worker", daemon=True)
        self._thread.start()
        await loaded

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_SHUTDOWN)
        await asyncio.to_thread(self._thread.join, 30)
        self._thread = None
        self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _load(self) -> Scheduler:
        from llama_cpp import Llama

        config = self.config
        started = time.perf_counter()
        llama = Llama(
            model_path=str(config.model_path),
            n_ctx=config.context_size,
            n_batch=config.batch_size,
            n_threads=config.threads,
            n_threads_batch=config.threads,
            logits_all=False,
            verbose=False,
        )
        # Sequence 0 holds the shared system prompt; each running conversation has one, chips up to MAX_BRANCHES,
        # a request for n choices up to MAX_CHOICES.
        extra = max(MAX_BRANCHES, MAX_CHOICES) - 1
        n_seqs = 1 + config.parallel + extra
        kv_cells = config.context_size * (config.parallel + 1)
        batch = max(config.batch_size, config.prefill_chunk + config.parallel + extra)
        _allow_sequences(llama, n_seqs, kv_cells, batch)
        self._llama = llama
        self._formatter = PromptFormatter.from_llama(llama)
        # A model decrypted into memory is opened as /proc/self/fd/N: name it by its id, not by the descriptor.
        log.info(
            "loaded %s (%s) in %.1f s: %d parallel sequences, %d tokens each, %d KV cells, prefill chunk %d, "
            "%d threads",
            config.model_id, config.model_path, time.perf_counter() - started, config.parallel, config.context_size,
            kv_cells, config.prefill_chunk, config.threads,
        )  # fmt: skip
        return Scheduler(
            llama,
            parallel=config.parallel,
            extra_seqs=extra,
            prefill_chunk=config.prefill_chunk,
            kv_cells=kv_cells,
            cache=self._cache,
            prefix_min_tokens=config.prefix_min_tokens,
            stats=self.stats,
            model_id=config.model_id,
        )

    def _run(self, loaded: asyncio.Future[None]) -> None:
        loop = loaded.get_loop()
        try:
            scheduler = self._load()
        except Exception as exc:  # a bad file must not take the service down: readiness reports it
            self._load_error = f"model failed to load: {exc}"
            log.error(self._load_error)
            loop.call_soon_threadsafe(_resolve, loaded)
            return
        self._scheduler = scheduler
        self._ready.set()
        loop.call_soon_threadsafe(_resolve, loaded)
        while self._intake(scheduler, block=not scheduler.active and not scheduler.waiting):
            try:
                scheduler.admit()
                scheduler.run_step()
            except Exception as exc:  # llama.cpp failures become a clean error for the sequences in the batch
                log.exception("generation step failed")
                for sequence in list(scheduler.active):
                    scheduler.fail(sequence, Unavailable(f"local generation failed: {exc}"))
        scheduler.close()
        self._llama = None

    # ---- Backend interface ------------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            kind="local",
            model=self.config.model_id,
            context_size=self.config.context_size,
            details={
                "threads": self.config.threads,
                "parallel": self.config.parallel,
                "prefill_chunk": self.config.prefill_chunk,
                "queue_depth": self._pending,
                "queue_capacity": self.capacity,
                "ttft_ms_ewma": self.stats.ttft_ms,
                "decode_tps_ewma": self.stats.decode_tps,
                "service_ms_ewma": self.stats.service_ms,
                "prefix_cache_entries": len(self._cache),
                "prefix_cache_bytes": self._cache.nbytes,
                "completed": self.stats.completed,
                "cancelled": self.stats.cancelled,
                **self._scheduler_details(),
            },
        )

    def _scheduler_details(self) -> dict[str, object]:
        """The live batch, read from another thread: plain numbers, a slightly stale view is fine."""
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        step = scheduler.step
        waiting = len(scheduler.waiting)
        running = scheduler.running
        return {
            "running": running,
            "waiting": waiting,
            "batch_tokens": step.last_batch,
            "step_ms_ewma": step.step_ms,
            "prefill_tokens_last_step": step.last_prefill,
            "decode_tokens_last_step": step.last_decode,
            "prefill_tokens_total": step.prefill_tokens,
            "decode_tokens_total": step.decode_tokens,
            "steps_total": step.steps,
            "kv_cells_reserved": step.kv_cells,
            "kv_cells": scheduler.kv_cells,
            "queue_wait_ms_ewma": step.queue_wait_ms,
            "queue_wait_seconds_sum": step.queue_wait_seconds_sum,
            "admitted_total": step.admitted,
            "prefix_cache_hits": step.prefix_hits,
            "service_rate_per_s": scheduler.service_rate(),
            "estimated_wait_ms": self.estimated_wait_ms(),
            "estimated_ttft_ms": self.estimated_ttft_ms(),
            "background_pending": self._background,
            "background_preempted": step.preempted,
            "background_dropped": step.dropped,
        }

    def estimated_wait_ms(self) -> float | None:
        """How long a request arriving now waits for a slot: nothing while one is free, else the time for the
        sequences ahead of it to drain at the measured service rate. The router adds the measured first-token
        time (its own prefill) to this."""
        scheduler = self._scheduler
        if scheduler is None:
            return None
        ahead = self._pending - self.config.parallel
        if ahead < 0:
            return 0.0
        return drain_seconds(ahead + 1, self.config.parallel, scheduler.service_rate(), self.stats.service_ms) * 1000

    def estimated_ttft_ms(self) -> float | None:
        """First token of a request arriving now, from the live batch: the wait for a slot, then the steps that
        prefill the prompt tokens ahead of it and its own (the measured average), at the measured step time.
        None until a step has been measured."""
        scheduler = self._scheduler
        wait = self.estimated_wait_ms()
        if scheduler is None or wait is None or scheduler.step.step_ms is None:
            return None
        step = scheduler.step
        own = step.own_prefill if step.own_prefill is not None else float(self.config.prefill_chunk)
        return ttft_estimate_ms(wait, scheduler.prefill_ahead(), own, self.config.prefill_chunk, step.step_ms)

    @property
    def capacity(self) -> int:
        return self.config.parallel + self.config.queue_depth

    @property
    def pending(self) -> int:
        return self._pending

    async def health(self) -> Health:
        if not self.ready:
            return Health(False, self._load_error or "model not loaded", self._pending, self.capacity)
        if self._pending >= self.capacity:
            return Health(False, "queue full", self._pending, self.capacity)
        return Health(True, "", self._pending, self.capacity)

    async def chat(self, request: ChatRequest) -> Completion:
        completion = await collect(self.stream(request))
        if completion is None:
            raise Unavailable("local generation ended without a result")
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        job = self._admit(request)
        try:
            while True:
                batch = await job.channel.get_batch()
                # When the consumer lags behind the decoder, hand over the text decoded meanwhile as one chunk per
                # choice: fewer events to encode and send, so the API never slows the decode thread down.
                merged = _merged(item for item in batch if isinstance(item, Chunk) and item.final is None)
                last = batch[-1]
                if isinstance(last, UpcoachError):
                    for chunk in merged:
                        yield chunk
                    raise last
                for chunk in merged or ([Chunk()] if last.final is None else []):
                    yield chunk
                if last.final is not None:
                    yield Chunk(final=last.final)
                    return
        finally:
            # Runs on normal end, on error, and when the consumer closes us (client disconnected). The slot is
            # released here, on the loop, so the next request sees it free as soon as this one has its answer;
            # a cancelled generation stops within one token, before the worker takes the next job.
            job.cancel.set()
            if request.background:
                self._background -= 1
            else:
                self._pending -= 1

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """``text`` as this model's token ids (``special``: with BOS, and control tokens parsed as such). Reads only
        the vocabulary, never the context, so it may run beside the engine thread."""
        llama = self._loaded()
        return list(llama.tokenize(text.encode("utf-8"), add_bos=special, special=special))  # type: ignore[attr-defined]

    def detokenize(self, tokens: list[int]) -> str:
        llama = self._loaded()
        n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
        if any(not 0 <= token < n_vocab for token in tokens):
            raise InvalidRequest(f"token ids are 0..{n_vocab - 1} for this model", param="tokens")
        return bytes(llama.detokenize(tokens)).decode("utf-8", errors="replace")  # type: ignore[attr-defined]

    def _loaded(self) -> object:
        if not self.ready or self._llama is None:
            raise Unavailable("local model is not loaded yet")
        return self._llama

    def _admit(self, request: ChatRequest) -> _Job:
        if not self.ready:
            raise Unavailable(self._load_error or "local model is not loaded yet")
        if request.background:
            # Best effort: at most one background job per slot outstanding; beyond that it is not worth queueing.
            if self._background >= self.config.parallel:
                raise Overloaded("background work: the local engine has enough queued already")
        elif self._pending >= self.capacity:
            scheduler = self._scheduler
            rate = scheduler.service_rate() if scheduler is not None else None
            raise Overloaded(
                f"local queue is full ({self._pending} requests); retry later",
                retry_after=retry_after_seconds(
                    self._pending - self.config.parallel, self.config.parallel, rate, self.stats.service_ms
                ),
            )
        if request.branches > 1 and (request.grammar is None or request.branches > MAX_BRANCHES):
            raise InvalidRequest(
                f"branches needs a grammar and is at most {MAX_BRANCHES} (got {request.branches})", param="branches"
            )
        n = request.params.n
        if not 1 <= n <= MAX_CHOICES or (n > 1 and request.branches > 1):
            raise InvalidRequest(f"n is 1..{MAX_CHOICES} and not combined with branches (got {n})", param="n")
        loop = asyncio.get_running_loop()
        job = _Job(request, Channel(loop))
        if request.background:
            self._background += 1
        else:
            self._pending += 1
        self._queue.put(job)
        return job

    # ---- engine thread --------------------------------------------------------------------------------------
    def _sequence_for(self, job: _Job) -> Sequence:
        """Render and check the request (errors go to its caller before it is queued), then make its sequence."""
        formatter = self._formatter
        assert formatter is not None
        request = job.request
        llama = self._llama
        assert llama is not None
        if request.prompt is not None:  # raw text to continue (/v1/completions): no chat template, no prefix boundary
            raw = llama.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False)  # type: ignore[attr-defined]
            prompt = RenderedPrompt(list(raw), 0)
        else:
            prompt = formatter.render(request.messages, request.continuation)
        n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
        if any(not 0 <= token < n_vocab for token, _ in request.params.logit_bias):
            raise InvalidRequest(f"logit_bias names a token id outside 0..{n_vocab - 1}", param="logit_bias")
        tokens = np.asarray(prompt.tokens, dtype=np.intc)
        n_ctx = self.config.context_size
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens; this model's context is {n_ctx} tokens", param="messages"
            )
        max_tokens = min(request.params.max_tokens or self.config.default_max_tokens, n_ctx - len(tokens))
        scheduler = self._scheduler
        n = request.params.n
        if n > 1 and scheduler is not None and len(tokens) + n * max_tokens > scheduler.kv_cells:
            # Each choice holds its own answer's cells: n of them must fit beside the prompt.
            max_tokens = max(1, (scheduler.kv_cells - len(tokens)) // n)
        grammar = self._checked_grammar(request.grammar) if request.grammar else None
        return new_sequence(job, tokens, prompt.boundary, max_tokens, request.params.stop + prompt.stops, grammar)

    def _intake(self, scheduler: Scheduler, block: bool) -> bool:
        """Take every job handed over since the last step (waiting for one when idle); False on shutdown."""
        try:
            item = self._queue.get(block=block)
        except queue.Empty:
            return True
        while True:
            if item is _SHUTDOWN:
                return False
            assert isinstance(item, _Job)
            try:
                sequence = self._sequence_for(item)
            except UpcoachError as exc:
                item.channel.put(exc)
            else:
                item.channel.put(Chunk())  # accepted: the API may now commit to a 200 and start streaming
                scheduler.enqueue(sequence)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True

    def _checked_grammar(self, text: str) -> str:
        """``text`` once llama.cpp has parsed it; a grammar that does not parse is the caller's error (400).

        Checked before a sampler is built from it: llama.cpp returns NULL for a bad grammar, and a NULL sampler
        would crash the worker. Checked texts are remembered, so a fixed grammar (chips) is parsed once here.
        """
        if text not in self._grammars:
            from llama_cpp import llama_sampler_free, llama_sampler_init_grammar

            vocab = self._llama._model.vocab  # type: ignore[union-attr]
            compiled = llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
            if not compiled:
                raise InvalidRequest("the grammar does not parse as GBNF with a 'root' rule", param="grammar")
            llama_sampler_free(compiled)
            if len(self._grammars) >= 64:
                self._grammars.clear()
            self._grammars.add(text)
        return text


def _merged(chunks: Iterable[Chunk]) -> list[Chunk]:
    """Consecutive text chunks of the same choice joined into one (their log probabilities too), in order; a
    chunk that ends a choice (``finish``) stays last of its run."""
    out: list[Chunk] = []
    for chunk in chunks:
        previous = out[-1] if out else None
        if previous is not None and previous.index == chunk.index and previous.finish is None:
            out[-1] = Chunk(previous.text + chunk.text, index=chunk.index, logprobs=previous.logprobs + chunk.logprobs,
                            finish=chunk.finish)  # fmt: skip
        else:
            out.append(chunk)
    return out


def _allow_sequences(llama: object, n_seq_max: int, kv_cells: int, n_batch: int) -> None:
    """Give ``llama`` a context that holds ``n_seq_max`` sequences in ONE unified KV buffer of ``kv_cells``.

    ``Llama()`` builds its context for a single sequence and has no parameter for more, so the context is built
    again from the same parameters. Unified matters: split per sequence, each sequence would get only
    ``n_ctx / n_seq_max`` cells, and copying a prompt to another sequence would duplicate its cells instead of
    sharing them. The first context is freed before the new one is made, so the KV buffer is never held twice.
    """
    from llama_cpp._internals import LlamaContext

    params = llama.context_params  # type: ignore[attr-defined]
    params.n_seq_max = n_seq_max
    params.n_ctx = kv_cells
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.kv_unified = True
    llama._ctx.close()  # type: ignore[attr-defined]
    llama._ctx = LlamaContext(model=llama._model, params=params, verbose=False)  # type: ignore[attr-defined]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
