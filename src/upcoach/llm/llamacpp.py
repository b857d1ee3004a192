"""In-process llama.cpp engine: one worker thread owns the model; requests wait in a bounded queue.

Why this shape: on a few CPU cores one decode stream already saturates memory bandwidth, so the engine runs one
generation at a time on a dedicated thread (never the event loop) and spends its cleverness on time to first
token: every new conversation behind a known system prompt restores that prefix's KV cells from an LRU
(``PrefixCache``) instead of recomputing them. Tokens reach the event loop through a ``Channel`` that wakes the
loop once per batch, so streaming costs the decode thread almost nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from upcoach.errors import ContextLengthExceeded, InvalidRequest, Overloaded, Unavailable, UpcoachError
from upcoach.llm.base import (
    BackendInfo,
    ChatRequest,
    Chunk,
    Completion,
    Health,
    Usage,
    collect,
)
from upcoach.llm.channel import Channel
from upcoach.llm.constrained import GrammarSampler
from upcoach.llm.prefix_cache import PrefixCache, Tokens, common_prefix
from upcoach.llm.prompt import PromptFormatter, RenderedPrompt
from upcoach.llm.stops import StopMatcher

log = logging.getLogger(__name__)

# A cached prefix must beat what the live context already holds by this many tokens to be worth a restore.
RESTORE_MARGIN = 16
# Parallel one-line answers per request (``ChatRequest.branches``): suggestion chips ask for at most 5. The
# context holds this many sequences besides sequence 0, the one every other request uses.
MAX_BRANCHES = 5
# How many of the most likely first tokens are looked at when choosing the branches' different starts.
FIRST_TOKEN_CANDIDATES = 64


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    model_id: str
    threads: int
    context_size: int = 4096
    batch_size: int = 512
    queue_depth: int = 16
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
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._load_error: str | None = None
        self._llama: object | None = None
        self._formatter: PromptFormatter | None = None
        self._cache = PrefixCache(config.prefix_cache_bytes)
        self._pieces: dict[int, bytes] = {}
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

    def _load(self) -> None:
        from llama_cpp import Llama

        started = time.perf_counter()
        llama = Llama(
            model_path=str(self.config.model_path),
            n_ctx=self.config.context_size,
            n_batch=self.config.batch_size,
            n_threads=self.config.threads,
            n_threads_batch=self.config.threads,
            logits_all=False,
            verbose=False,
        )
        _allow_branches(llama, 1 + MAX_BRANCHES)
        self._llama = llama
        self._formatter = PromptFormatter.from_llama(llama)
        # A model decrypted into memory is opened as /proc/self/fd/N: name it by its id, not by the descriptor.
        log.info(
            "loaded %s (%s) in %.1f s (ctx %d, %d threads)",
            self.config.model_id, self.config.model_path, time.perf_counter() - started, self.config.context_size,
            self.config.threads,
        )  # fmt: skip

    def _run(self, loaded: asyncio.Future[None]) -> None:
        loop = loaded.get_loop()
        try:
            self._load()
        except Exception as exc:  # a bad file must not take the service down: readiness reports it
            self._load_error = f"model failed to load: {exc}"
            log.error(self._load_error)
            loop.call_soon_threadsafe(_resolve, loaded)
            return
        self._ready.set()
        loop.call_soon_threadsafe(_resolve, loaded)
        while True:
            job = self._queue.get()
            if job is _SHUTDOWN:
                break
            assert isinstance(job, _Job)
            try:
                self._generate(job)
            except UpcoachError as exc:
                job.channel.put(exc)
            except Exception as exc:  # llama.cpp failures become a clean error for that one request
                log.exception("generation failed")
                job.channel.put(Unavailable(f"local generation failed: {exc}"))
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
                "queue_depth": self._pending,
                "queue_capacity": self.capacity,
                "ttft_ms_ewma": self.stats.ttft_ms,
                "decode_tps_ewma": self.stats.decode_tps,
                "service_ms_ewma": self.stats.service_ms,
                "prefix_cache_entries": len(self._cache),
                "prefix_cache_bytes": self._cache.nbytes,
                "completed": self.stats.completed,
                "cancelled": self.stats.cancelled,
            },
        )

    @property
    def capacity(self) -> int:
        return 1 + self.config.queue_depth

    @property
    def pending(self) -> int:
        return self._pending

    async def health(self) -> Health:
        if not self.ready:
            return Health(False, self._load_error or "model not loaded", self._pending, self.capacity)
        if self._pending >= self.capacity:
            return Health(False, "queue full", self._pending, self.capacity)
        return Health(True, "", self._pending, self.capacity)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """``text`` as this model's token ids (``special``: with BOS, and control tokens parsed as such). Reads only
        the vocabulary, never the context, so it may run beside the worker thread."""
        llama = self._loaded()
        return list(llama.tokenize(text.encode("utf-8"), add_bos=special, special=special))  # type: ignore[attr-defined]

    def detokenize(self, tokens: list[int]) -> str:
        llama = self._loaded()
        n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
        if any(not 0 <= token < n_vocab for token in tokens):
            raise InvalidRequest(f"token ids are 0..{n_vocab - 1} for this model", param="tokens")
        return b"".join(self._piece(token) for token in tokens).decode("utf-8", errors="replace")

    def _loaded(self) -> object:
        if not self.ready or self._llama is None:
            raise Unavailable(self._load_error or "local model is not loaded yet")
        return self._llama

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
                # When the consumer lags behind the decoder, hand over the text decoded meanwhile as one chunk:
                # fewer events to encode and send, so the API never slows the decode thread down.
                text = "".join(item.text for item in batch if isinstance(item, Chunk))
                last = batch[-1]
                if isinstance(last, UpcoachError):
                    if text:
                        yield Chunk(text)
                    raise last
                if text or last.final is None:
                    yield Chunk(text)
                if last.final is not None:
                    yield Chunk(final=last.final)
                    return
        finally:
            # Runs on normal end, on error, and when the consumer closes us (client disconnected). The slot is
            # released here, on the loop, so the next request sees it free as soon as this one has its answer;
            # a cancelled generation stops within one token, before the worker takes the next job.
            job.cancel.set()
            self._pending -= 1

    def _admit(self, request: ChatRequest) -> _Job:
        if not self.ready:
            raise Unavailable(self._load_error or "local model is not loaded yet")
        if self._pending >= self.capacity:
            per_job = (self.stats.ttft_ms or 500) / 1000 + 256 / (self.stats.decode_tps or 40)
            raise Overloaded(
                f"local queue is full ({self._pending} requests); retry later",
                retry_after=max(1.0, round(per_job * self.config.queue_depth / 2)),
            )
        if request.branches > 1 and (request.grammar is None or request.branches > MAX_BRANCHES):
            raise InvalidRequest(
                f"branches needs a grammar and is at most {MAX_BRANCHES} (got {request.branches})", param="branches"
            )
        loop = asyncio.get_running_loop()
        job = _Job(request, Channel(loop))
        self._pending += 1
        self._queue.put(job)
        return job

    # ---- worker thread ----------------------------------------------------------------------------------------
    def _generate(self, job: _Job) -> None:
        started = time.perf_counter()
        if job.cancel.is_set():
            self.stats.cancelled += 1
            return
        llama = self._llama
        formatter = self._formatter
        assert llama is not None and formatter is not None
        params = job.request.params
        if job.request.prompt is not None:  # raw text to continue: no chat template, no prefix boundary
            raw = llama.tokenize(job.request.prompt.encode("utf-8"), add_bos=True, special=False)  # type: ignore[attr-defined]
            prompt = RenderedPrompt(list(raw), 0)
        else:
            prompt = formatter.render(job.request.messages, job.request.continuation)
        tokens = np.asarray(prompt.tokens, dtype=np.intc)
        n_ctx = self.config.context_size
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens; this model's context is {n_ctx} tokens",
                param="messages",
            )
        max_tokens = min(params.max_tokens or self.config.default_max_tokens, n_ctx - len(tokens))
        grammar = self._checked_grammar(job.request.grammar) if job.request.grammar else None
        n_vocab = int(llama.n_vocab())  # type: ignore[attr-defined]
        if any(not 0 <= token < n_vocab for token, _ in params.logit_bias):
            raise InvalidRequest(f"logit_bias names a token id outside 0..{n_vocab - 1}", param="logit_bias")
        job.channel.put(Chunk())  # admitted: the API may now commit to a 200 and start streaming
        cached = self._reuse_prefix(llama, tokens, prompt.boundary)

        seed = params.seed if params.seed is not None else random.getrandbits(31)
        llama.set_seed(seed)  # type: ignore[attr-defined]
        if job.request.branches > 1:
            assert grammar is not None  # checked in _admit
            n_generated, first_token_at, finish = self._decode_branches(job, llama, tokens, grammar, max_tokens)
        else:
            stops = params.stop + prompt.stops
            n_generated, first_token_at, finish = self._decode(job, llama, tokens, grammar, max_tokens, seed, stops)
        ended = time.perf_counter()
        if grammar is None:
            # A constrained answer (chips, JSON) is a one-shot: nobody continues that conversation, so it would
            # only push useful prefixes out of the cache.
            self._remember(llama, tokens)

        ttft_ms = (first_token_at - started) * 1000 if first_token_at else None
        decode_s = ended - first_token_at if first_token_at else 0.0
        prefill = len(tokens) - cached
        self.stats.observe(
            ttft_ms if cached > 0 else None,
            # Branch tokens are decoded several per step: they would overstate the speed of one stream.
            (n_generated - 1) / decode_s if n_generated > 8 and decode_s > 0 and job.request.branches == 1 else None,
            prefill / (ttft_ms / 1000) if ttft_ms and prefill > 64 else None,
            (ended - started) * 1000 if finish != "cancelled" else None,
        )
        if finish == "cancelled":
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1
        job.channel.put(
            Chunk(
                final=Completion(
                    text="",
                    finish_reason=finish,  # type: ignore[arg-type]
                    usage=Usage(len(tokens), n_generated, cached),
                    model=self.config.model_id,
                    first_token_ms=ttft_ms,
                    total_ms=(ended - started) * 1000,
                    queue_ms=(started - job.enqueued) * 1000,
                )
            )
        )

    def _decode(
        self,
        job: _Job,
        llama: object,
        tokens: Tokens,
        grammar: str | None,
        max_tokens: int,
        seed: int,
        stops: tuple[str, ...],
    ) -> tuple[int, float | None, str]:
        """One sequence, token by token, streamed as it comes: (tokens generated, first token time, finish)."""
        params = job.request.params
        matcher = StopMatcher(stops)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llama._model  # type: ignore[attr-defined]
        from llama_cpp import llama_vocab_is_eog

        n_generated = 0
        first_token_at: float | None = None
        finish = "length"
        sampler: GrammarSampler | None = None
        if grammar is not None:
            sampler = GrammarSampler(
                llama, grammar, temperature=params.temperature, top_p=params.top_p, seed=seed,
                presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                logit_bias=params.logit_bias,
            )  # fmt: skip
            generator = _constrained(llama, tokens, sampler)
        else:
            generator = llama.generate(  # type: ignore[attr-defined]
                tokens.tolist(), temp=params.temperature, top_p=params.top_p, top_k=40, min_p=0.05, reset=True,
                presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                logits_processor=_biased(params.logit_bias), repeat_penalty=params.repeat_penalty,
            )  # fmt: skip
        for token in generator:
            now = time.perf_counter()
            if first_token_at is None:
                first_token_at = now
            if llama_vocab_is_eog(vocab.vocab, token):
                finish = "stop"
                break
            n_generated += 1
            piece = decoder.decode(self._piece(token))
            emit, stopped = matcher.feed(piece)
            if emit:
                job.channel.put(Chunk(emit))
            if stopped:
                finish = "stop"
                break
            if job.cancel.is_set():
                finish = "cancelled"
                break
            if n_generated >= max_tokens:
                break
        generator.close()
        if sampler is not None:
            sampler.close()
        tail = matcher.flush(decoder.decode(b"", final=True)) if finish != "cancelled" else ""
        if tail:
            job.channel.put(Chunk(tail))
        return n_generated, first_token_at, finish

    def _decode_branches(
        self, job: _Job, llama: object, tokens: Tokens, grammar: str, max_tokens: int
    ) -> tuple[int, float | None, str]:
        """``branches`` one-line answers decoded side by side, one llama.cpp batch per step.

        Why: n short answers then take as many steps as the longest one instead of the sum of all. A step over
        n tokens costs less than n single steps but far more than one on a small CPU (measured on 2 cores with
        a 0.5B Q4_K_M model: x2 for 2 tokens, x3 for 3-4, x3.7 for 5), so the gain is real but not n-fold.

        The prompt is evaluated once in sequence 0 and shared with sequences 1..n by ``seq_cp`` (the cells are
        shared, not copied). Each branch starts from a different allowed first token (the n most likely, no two
        starting the same word), then continues under its own grammar sampler (greedy when temperature is 0)
        until its line ends; a finished line is sent as one chunk, ``text\\n``. Sequences 1..n are removed on
        every way out, so seq 0 is left holding exactly the prompt, as the prefix cache and the next request
        expect.
        """
        import llama_cpp

        params = job.request.params
        n = job.request.branches
        memory = llama._ctx.memory  # type: ignore[attr-defined]
        ctx = llama._ctx.ctx  # type: ignore[attr-defined]
        vocab = llama._model.vocab  # type: ignore[attr-defined]
        start = min(llama.n_tokens, len(tokens) - 1)  # type: ignore[attr-defined]
        self._truncate(llama, start)
        llama.eval(tokens[start:].tolist())  # type: ignore[attr-defined]
        samplers = [
            GrammarSampler(llama, grammar, temperature=params.temperature, top_p=params.top_p, seed=seed)
            for seed in range(params.seed or 0, (params.seed or 0) + n)
        ]
        batch = llama_cpp.llama_batch_init(n, 0, 1)
        n_generated = 0
        finish = "stop"
        try:
            firsts = self._first_tokens(llama, samplers[0], n)
            first_token_at = time.perf_counter()
            samplers, rest = samplers[: len(firsts)], samplers[len(firsts) :]
            for sampler in rest:
                sampler.close()
            for branch, sampler in enumerate(samplers):
                sampler.accept(firsts[branch])
                llama_cpp.llama_memory_seq_cp(memory, 0, branch + 1, 0, len(tokens))
            texts = [b"" for _ in firsts]
            current = list(firsts)
            running = list(range(len(firsts)))
            position = len(tokens)
            while running:
                for branch in list(running):
                    token = current[branch]
                    ended = bool(llama_cpp.llama_vocab_is_eog(vocab, token))
                    if not ended:
                        n_generated += 1
                        texts[branch] += self._piece(token)
                    line, newline, _ = texts[branch].partition(b"\n")
                    if ended or newline or position - len(tokens) + 1 >= max_tokens:
                        running.remove(branch)
                        if line:
                            job.channel.put(Chunk(line.decode("utf-8", errors="replace") + "\n"))
                if not running:
                    break
                if job.cancel.is_set():
                    finish = "cancelled"
                    break
                batch.n_tokens = len(running)
                for row, branch in enumerate(running):
                    batch.token[row] = current[branch]
                    batch.pos[row] = position
                    batch.n_seq_id[row] = 1
                    batch.seq_id[row][0] = branch + 1
                    batch.logits[row] = 1
                code = llama_cpp.llama_decode(ctx, batch)
                if code != 0:
                    raise RuntimeError(f"llama_decode returned {code} for {len(running)} branches")
                for row, branch in enumerate(running):
                    current[branch] = samplers[branch].sample(row)
                position += 1
        finally:
            llama_cpp.llama_batch_free(batch)
            for sampler in samplers:
                sampler.close()
            for branch in range(1, n + 1):
                llama_cpp.llama_memory_seq_rm(memory, branch, -1, -1)
        return n_generated, first_token_at, finish

    def _first_tokens(self, llama: object, sampler: GrammarSampler, n: int) -> list[int]:
        """Up to ``n`` distinct first tokens for the branches, most likely first, each allowed by the grammar.

        Two tokens where one's text starts the other's ("I" and "It", "Help" and "Hel") would likely grow into
        the same reply, so only the more likely one is kept.
        """
        logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(int(llama.n_vocab()),))  # type: ignore[attr-defined]
        top = np.argpartition(logits, -FIRST_TOKEN_CANDIDATES)[-FIRST_TOKEN_CANDIDATES:]
        top = top[np.argsort(-logits[top])]
        chosen: list[int] = []
        keys: list[str] = []
        for token in top[sampler.allowed(top)]:
            key = self._piece(int(token)).decode("utf-8", errors="ignore").strip().casefold()
            if not key or any(key.startswith(k) or k.startswith(key) for k in keys):
                continue
            chosen.append(int(token))
            keys.append(key)
            if len(chosen) == n:
                break
        if not chosen:
            raise RuntimeError("the grammar allows none of the likely first tokens")
        return chosen

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

    def _piece(self, token: int) -> bytes:
        """The token's text bytes, memoised: the vocabulary is fixed, and this runs once per generated token."""
        piece = self._pieces.get(token)
        if piece is None:
            from llama_cpp import llama_token_to_piece

            vocab = self._llama._model.vocab  # type: ignore[union-attr]
            buffer = ctypes.create_string_buffer(64)
            n = llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            if n < 0:  # the piece is longer than the buffer: llama.cpp says how long
                buffer = ctypes.create_string_buffer(-n)
                n = llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            piece = buffer.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def _reuse_prefix(self, llama: object, tokens: Tokens, boundary: int) -> int:
        """Put the longest known prefix of ``tokens`` into the context; save the boundary prefix if new.

        Returns how many prompt tokens need no prefill.
        """
        live = common_prefix(np.asarray(llama.input_ids[: llama.n_tokens]), tokens)  # type: ignore[attr-defined]
        entry, shared = self._cache.best(tokens)
        if entry is not None and shared > live + RESTORE_MARGIN:
            if self._restore(llama, entry.tokens, entry.state):
                live = shared
        # Keep the context at exactly the shared part; generate() evaluates the rest.
        self._truncate(llama, live)
        if (
            boundary >= self.config.prefix_min_tokens
            and boundary > live
            and boundary < len(tokens)
            and not self._cache.contains(tokens[:boundary])
        ):
            llama.eval(tokens[live:boundary].tolist())  # type: ignore[attr-defined]
            self._save(llama, tokens[:boundary])
            live = boundary
        return min(live, len(tokens) - 1)

    def _remember(self, llama: object, prompt: Tokens) -> None:
        """Keep the whole conversation so its next turn starts warm even after other users' requests."""
        n = llama.n_tokens  # type: ignore[attr-defined]
        if n >= self.config.prefix_min_tokens and n > len(prompt):
            self._save(llama, np.asarray(llama.input_ids[:n], dtype=np.intc))  # type: ignore[attr-defined]

    def _truncate(self, llama: object, n: int) -> None:
        llama._ctx.kv_cache_seq_rm(0, n, -1)  # type: ignore[attr-defined]
        llama.n_tokens = n  # type: ignore[attr-defined]
        # The logits in the context belong to the last token decoded, not to position n: make generate()
        # replay the last prompt token instead of sampling from stale logits.
        llama._requires_eval = True  # type: ignore[attr-defined]

    def _save(self, llama: object, tokens: Tokens) -> None:
        from llama_cpp import llama_state_seq_get_data, llama_state_seq_get_size

        ctx = llama._ctx.ctx  # type: ignore[attr-defined]
        size = llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_state_seq_get_data(ctx, buffer, size, 0)
        if written:
            self._cache.put(tokens, bytes(memoryview(buffer)[:written]))

    def _restore(self, llama: object, tokens: Tokens, state: bytes) -> bool:
        from llama_cpp import llama_state_seq_set_data

        ctx = llama._ctx.ctx  # type: ignore[attr-defined]
        llama._ctx.kv_cache_seq_rm(0, 0, -1)  # type: ignore[attr-defined]
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_state_seq_set_data(ctx, buffer, len(state), 0) == 0:
            llama.n_tokens = 0  # type: ignore[attr-defined]
            log.warning("prefix restore failed; evaluating the prompt from scratch")
            return False
        llama.input_ids[: len(tokens)] = tokens  # type: ignore[attr-defined]
        llama.n_tokens = len(tokens)  # type: ignore[attr-defined]
        llama._requires_eval = True  # type: ignore[attr-defined]
        return True


def _constrained(llama: object, prompt: np.ndarray, sampler: GrammarSampler) -> Iterator[int]:
    """``Llama.generate`` for grammar requests: the same prompt handling, sampling by ``GrammarSampler``.

    ``_reuse_prefix`` left exactly the shared prefix in the context; the rest is evaluated here (at least the last
    prompt token, so the logits we sample from belong to it).
    """
    start = min(llama.n_tokens, len(prompt) - 1)  # type: ignore[attr-defined]
    llama._ctx.kv_cache_seq_rm(0, start, -1)  # type: ignore[attr-defined]
    llama.n_tokens = start  # type: ignore[attr-defined]
    llama.eval(prompt[start:].tolist())  # type: ignore[attr-defined]
    while True:
        token = sampler.sample()
        yield token
        llama.eval([token])  # type: ignore[attr-defined]


def _biased(logit_bias: tuple[tuple[int, float], ...]) -> list[Callable[[object, np.ndarray], np.ndarray]] | None:
    """OpenAI's ``logit_bias`` as a llama-cpp-python logits processor: the bias is added to those tokens' logits."""
    if not logit_bias:
        return None
    ids = np.array([token for token, _ in logit_bias], dtype=np.intc)
    bias = np.array([value for _, value in logit_bias], dtype=np.single)

    def add(_: object, scores: np.ndarray) -> np.ndarray:
        scores[ids] += bias
        return scores

    return [add]


def _allow_branches(llama: object, n_seq_max: int) -> None:
    """Give ``llama`` a context that holds ``n_seq_max`` sequences in ONE unified KV buffer.

    ``Llama()`` builds its context for a single sequence and has no parameter for more, so the context is built
    again from the same parameters. Unified matters: split per sequence, each sequence would get only
    ``n_ctx / n_seq_max`` cells, and copying the prompt to a branch would duplicate its cells instead of sharing
    them. The first context is freed before the new one is made, so the KV buffer is never held twice.
    """
    from llama_cpp._internals import LlamaContext

    params = llama.context_params  # type: ignore[attr-defined]
    params.n_seq_max = n_seq_max
    params.kv_unified = True
    llama._ctx.close()  # type: ignore[attr-defined]
    llama._ctx = LlamaContext(model=llama._model, params=params, verbose=False)  # type: ignore[attr-defined]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
