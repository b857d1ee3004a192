"""In-process batching check: the engine the app builds, N conversations started together, aggregate tokens/s.

A quick stand-in for the HTTP concurrency benchmark (benchmarks/concurrency.py) when the machine is too busy
for that one: no server, no client, just `LlamaCppEngine.chat` N times at once behind the coaching system
prompt, and the scheduler's own step counters.

    .venv/bin/python -m benchmarks.batch_steps --streams 1 8 --tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from benchmarks.common import COACH_SYSTEM_PROMPT, USER_MESSAGES
from upcoach.config import Settings
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import LlamaCppEngine
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry
from upcoach.modelstore.fetch import fetch
from upcoach.modelstore.manager import engine_config_for


def _request(index: int, tokens: int) -> ChatRequest:
    user = USER_MESSAGES[index % len(USER_MESSAGES)]
    messages = (ChatMessage("system", COACH_SYSTEM_PROMPT), ChatMessage("user", user))
    return ChatRequest(messages, GenerationParams(max_tokens=tokens, temperature=0.7, seed=index))


async def measure(levels: list[int], tokens: int, threads: int, ctx: int) -> list[dict[str, float]]:
    settings = Settings(threads=threads, context_size=ctx, parallel=max(levels), queue_depth=0)
    model = fetch(get_entry(DEFAULT_MODEL), settings.models_dir)
    engine = LlamaCppEngine(engine_config_for(settings, model, DEFAULT_MODEL))
    await engine.start()
    rows: list[dict[str, float]] = []
    try:
        await engine.chat(_request(0, 4))  # warm-up: the system prompt is in sequence 0 from now on
        for n in levels:
            step = engine._scheduler.step  # type: ignore[union-attr]
            steps, decoded = step.steps, step.decode_tokens
            started = time.perf_counter()
            results = await asyncio.gather(*(engine.chat(_request(i, tokens)) for i in range(n)))
            wall = time.perf_counter() - started
            generated = sum(r.usage.completion_tokens for r in results)
            rows.append({
                "streams": n, "wall_s": round(wall, 2), "tokens": generated,
                "aggregate_tps": round(generated / wall, 2), "steps": step.steps - steps,
                "decode_tokens_per_step": round((step.decode_tokens - decoded) / max(1, step.steps - steps), 2),
                "ms_per_step": round(wall * 1000 / max(1, step.steps - steps), 1),
                "ttft_ms_max": round(max(r.first_token_ms or 0 for r in results)),
            })  # fmt: skip
    finally:
        await engine.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=1024)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = asyncio.run(measure(args.streams, args.tokens, args.threads, args.ctx))
    print(json.dumps({"load_average_at_start": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
