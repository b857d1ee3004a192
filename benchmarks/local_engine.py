"""Local engine benchmark: our API vs raw llama-cpp-python vs `python -m llama_cpp.server`, in one run.

Measures, on the same GGUF file and thread count:
- decode tokens/s of one stream (first to last token);
- time to first token of a new conversation behind a ~350-token system prompt, over 20 users
  (sequential, each a different question), P50/P95;
- the same with two system prompts alternating (another app feature's prompt between users);
- resident memory of the server process with the model loaded (current and peak).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI

from benchmarks.common import (
    COACH_SYSTEM_PROMPT,
    DECODE_PROMPT,
    USER_MESSAGES,
    free_port,
    median,
    pct,
    python,
    start_llama_cpp_server,
    start_server,
)

OTHER_SYSTEM_PROMPT = (
    "You write short reply suggestions for a coaching chat. Given the conversation, propose three replies "
    "the user might tap next, each under eight words, friendly and specific. " * 6
)
DECODE_TOKENS = 200
DECODE_RUNS = 5


@dataclass
class Result:
    name: str
    decode_tps: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    ttft_alternating_ms: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    system_tokens: int | None = None


def _messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# ---- raw llama-cpp-python ---------------------------------------------------------------------------------------
def bench_raw(model: Path, threads: int, ctx: int) -> list[Result]:
    from llama_cpp import Llama

    result = Result("raw llama-cpp-python (Llama.generate)")
    llm = Llama(str(model), n_ctx=ctx, n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos = llm._model.token_get_text(llm.token_eos())
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="")

    def tokens(system: str, user: str) -> list[int]:
        prompt = fmt(messages=_messages(system, user)).prompt
        return llm.tokenize(prompt.encode(), add_bos=False, special=True)

    result.system_tokens = len(tokens(COACH_SYSTEM_PROMPT, "")) - 5

    # Decode rate: greedy-free default sampling, EOS ignored by counting only until max tokens or EOS.
    for run in range(DECODE_RUNS):
        llm.reset()
        llm.set_seed(run)
        first = last = None
        n = 0
        for token in llm.generate(tokens(COACH_SYSTEM_PROMPT, DECODE_PROMPT), temp=0.7, top_p=0.95):
            now = time.perf_counter()
            if first is None:
                first = now
            if llm.token_eos() == token:
                break
            last = now
            n += 1
            if n >= DECODE_TOKENS:
                break
        if first and last and n > 1:
            result.decode_tps.append((n - 1) / (last - first))

    # Time to first token, prompt evaluated from scratch for every new conversation (no reuse).
    for user in USER_MESSAGES:
        llm.reset()
        result.ttft_ms.append(_raw_ttft(llm, tokens(COACH_SYSTEM_PROMPT, user)))
    # llama-cpp-python's own reuse: the previous conversation stays in its single context, so the shared
    # system prompt is matched again; with another system prompt in between, that reuse is gone.
    kept = Result("raw llama-cpp-python, previous conversation left in context")
    kept.decode_tps = result.decode_tps
    for user in USER_MESSAGES:
        kept.ttft_ms.append(_raw_ttft(llm, tokens(COACH_SYSTEM_PROMPT, user)))
    for i, user in enumerate(USER_MESSAGES):
        system = COACH_SYSTEM_PROMPT if i % 2 == 0 else OTHER_SYSTEM_PROMPT
        kept.ttft_alternating_ms.append(_raw_ttft(llm, tokens(system, user)))
    llm.close()  # free the model before the servers load theirs
    gc.collect()
    return [result, kept]


def _raw_ttft(llm: Any, prompt: list[int]) -> float:
    started = time.perf_counter()
    for _ in llm.generate(prompt, temp=0.7):
        break
    return (time.perf_counter() - started) * 1000


# ---- any OpenAI-compatible server -------------------------------------------------------------------------------
def bench_openai_server(name: str, base_url: str, model: str) -> Result:
    result = Result(name)
    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=300)

    def stream(system: str, user: str, max_tokens: int, seed: int | None = None) -> tuple[float, float, float, int]:
        started = time.perf_counter()
        first = last = None
        pieces = 0
        usage_tokens = 0
        response = client.chat.completions.create(
            model=model,
            messages=_messages(system, user),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.7,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in response:
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                pieces += 1
        assert first is not None and last is not None, f"{name} streamed no content"
        return started, first, last, usage_tokens or pieces

    # Warm-up: the first request after load, and each system prompt seen once (steady state, as in production).
    stream(COACH_SYSTEM_PROMPT, "Hello", 4)
    stream(OTHER_SYSTEM_PROMPT, "Hello", 4)
    for run in range(DECODE_RUNS):
        _, first, last, n = stream(COACH_SYSTEM_PROMPT, DECODE_PROMPT, DECODE_TOKENS, seed=run)
        if n > 1:
            result.decode_tps.append((n - 1) / (last - first))
    for user in USER_MESSAGES:
        started, first, _, _ = stream(COACH_SYSTEM_PROMPT, user, 8)
        result.ttft_ms.append((first - started) * 1000)
    for i, user in enumerate(USER_MESSAGES):
        system = COACH_SYSTEM_PROMPT if i % 2 == 0 else OTHER_SYSTEM_PROMPT
        started, first, _, _ = stream(system, user, 8)
        result.ttft_alternating_ms.append((first - started) * 1000)
    return result


def bench_upcoach(model: Path, threads: int, ctx: int, data_dir: Path) -> Result:
    port = free_port()
    server = start_server(
        "upcoach",
        [python(), "-m", "upcoach.cli", "serve", "--port", str(port), "--model", str(model), "--log-level", "warning"],
        port,
        "/readyz",
        env={
            "UPCOACH_THREADS": str(threads),
            "UPCOACH_CONTEXT_SIZE": str(ctx),
            "UPCOACH_DATA_DIR": str(data_dir),
            # llama_cpp.server checks no key either: compare the engines, not authentication.
            "UPCOACH_AUTH": "off",
        },
    )
    try:
        result = bench_openai_server("upcoach API (streaming, openai SDK)", server.base_url + "/v1", "default")
        result.rss_mb, result.peak_rss_mb = server.rss_mb()
    finally:
        server.stop()
    return result


def bench_llama_cpp_server(model: Path, threads: int, ctx: int) -> Result:
    server = start_llama_cpp_server("llama_cpp.server", model, threads, ctx)
    try:
        result = bench_openai_server("python -m llama_cpp.server (defaults)", server.base_url + "/v1", "default")
        result.rss_mb, result.peak_rss_mb = server.rss_mb()
    finally:
        server.stop()
    return result


def run(model: Path, threads: int, ctx: int, data_dir: Path) -> list[Result]:
    return [
        *bench_raw(model, threads, ctx),
        bench_upcoach(model, threads, ctx, data_dir),
        bench_llama_cpp_server(model, threads, ctx),
    ]


def to_markdown(results: list[Result], raw_decode: float) -> str:
    lines = [
        "| system | decode tok/s (x raw) | TTFT new conversation P50 / P95 ms | TTFT, 2 system prompts alternating "
        "P50 / P95 ms | RSS now / peak MB |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        decode = median(r.decode_tps)
        memory = f"{r.rss_mb:.0f} / {r.peak_rss_mb:.0f}" if r.rss_mb else "—"
        lines.append(
            f"| {r.name} | {decode:.1f} ({decode / raw_decode:.2f}x) | {_p50_p95(r.ttft_ms)}"
            f" | {_p50_p95(r.ttft_alternating_ms)} | {memory} |"
        )
    return "\n".join(lines)


def _p50_p95(values: list[float]) -> str:
    return f"{median(values):.0f} / {pct(values, 95):.0f}" if values else "—"
