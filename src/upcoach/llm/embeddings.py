"""Embeddings from the local model through llama.cpp, in a context of their own, loaded on first use.

Why its own context: generation keeps one context busy on the engine's worker thread with a KV cache laid out
for chat; embeddings want pooled output for many short sequences at once. A second ``Llama`` in embedding mode
(mean pooling unless the model names its own) takes a batch of inputs in one decode, up to ``MAX_INPUTS`` of them
and ``context_size`` tokens in all. Nothing here leaves the machine, whatever the privacy level.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from upcoach.errors import ContextLengthExceeded, InvalidRequest

log = logging.getLogger(__name__)

MAX_INPUTS = 256  # llama-cpp-python's embedding context holds this many sequences


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


class LocalEmbedder:
    def __init__(self, model_path: Path, model_id: str, threads: int, context_size: int = 2048) -> None:
        self.model_path = model_path
        self.model_id = model_id
        self.threads = threads
        self.context_size = context_size
        self._llama: object | None = None
        self._lock = asyncio.Lock()  # one decode at a time: llama.cpp contexts are not shared between threads

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        if len(inputs) > MAX_INPUTS:
            raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request (got {len(inputs)})", param="input")
        async with self._lock:
            return await asyncio.to_thread(self._embed, inputs)

    def _load(self) -> object:
        if self._llama is None:
            import llama_cpp

            started = time.perf_counter()
            llama = self._open(llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)
            pooled = {
                llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                llama_cpp.LLAMA_POOLING_TYPE_CLS,
                llama_cpp.LLAMA_POOLING_TYPE_LAST,
            }
            if llama.pooling_type() not in pooled:  # type: ignore[attr-defined]  # a chat model names no pooling
                llama.close()  # type: ignore[attr-defined]
                llama = self._open(llama_cpp.LLAMA_POOLING_TYPE_MEAN)
            log.info("embedding context for %s ready in %.1f s", self.model_id, time.perf_counter() - started)
            self._llama = llama
        return self._llama

    def _open(self, pooling: int) -> object:
        from llama_cpp import Llama

        n = self.context_size
        return Llama(
            model_path=str(self.model_path), embedding=True, pooling_type=pooling, n_ctx=n, n_batch=n, n_ubatch=n,
            n_threads=self.threads, n_threads_batch=self.threads, verbose=False,
        )  # fmt: skip

    def _embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        llama = self._load()
        texts = [
            item if isinstance(item, str) else llama.detokenize(item).decode("utf-8", errors="replace")  # type: ignore[attr-defined]
            for item in inputs
        ]
        for index, text in enumerate(texts):
            n = len(llama.tokenize(text.encode("utf-8")))  # type: ignore[attr-defined]
            if n > self.context_size:
                raise ContextLengthExceeded(
                    f"input {index} is {n} tokens; embeddings take at most {self.context_size}", param="input"
                )
        vectors, count = llama.embed(texts, normalize=True, truncate=False, return_count=True)  # type: ignore[attr-defined]
        return Embeddings([list(map(float, v)) for v in vectors], int(count))
