"""CPU per streamed upstream call: the openai SDK against our lean client (llm/upstream.py), same stub, same loop.

`python -m benchmarks.upstream_client [--requests N]`: starts the stub, then for each client sends N streamed chat
requests one after another (after a warm-up) and reads every event, on uvloop like the gateway; prints the
process CPU time (user + system) and wall time per request. One request at a time, so CPU per request is the
client's own cost plus the loop's; the stub runs in another process.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import openai
import uvloop

from benchmarks.gateway import BODIES, CHAT_PATH, start_stub
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.llm.upstream import UpstreamClient

WARMUP = 200
REQUESTS = 2000


def _request() -> ChatRequest:
    text = str(BODIES[CHAT_PATH]["messages"][0]["content"])  # type: ignore[index]
    return ChatRequest((ChatMessage("user", text),), GenerationParams(max_tokens=64))


async def _timed(name: str, call: Callable[[], Awaitable[object]], requests: int) -> str:
    for _ in range(WARMUP):
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return f"| {name} | {cpu / requests * 1e6:,.0f} | {wall / requests * 1e6:,.0f} |"


async def measure(base_url: str, requests: int) -> list[str]:
    body = {**BODIES[CHAT_PATH], "stream": True, "stream_options": {"include_usage": True}}
    rows = ["| client | CPU µs per streamed request | wall µs per request |", "|---|---:|---:|"]

    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)

    async def sdk_call() -> None:
        stream = await sdk.chat.completions.create(**body)  # type: ignore[call-overload]
        async for _ in stream:
            pass

    rows.append(await _timed(f"openai SDK {openai.__version__} (its default httpx client)", sdk_call, requests))
    await sdk.close()

    try:
        sdk = openai.AsyncOpenAI(
            base_url=base_url, api_key="x", max_retries=0, http_client=openai.DefaultAioHttpClient()
        )
    except RuntimeError as exc:  # the SDK's aiohttp transport is an optional extra
        rows.append(f"| openai SDK, aiohttp transport | not installed ({exc}) | |")
    else:
        rows.append(await _timed("openai SDK, its aiohttp transport (DefaultAioHttpClient)", sdk_call, requests))
        await sdk.close()

    plain = httpx.AsyncClient(base_url=base_url, headers={"Authorization": "Bearer x"})

    async def httpx_call() -> None:
        async with plain.stream("POST", "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])

    rows.append(await _timed(f"httpx {httpx.__version__} AsyncClient, SSE lines + json.loads", httpx_call, requests))
    await plain.aclose()

    lean = UpstreamClient(base_url, api_key="x")

    async def lean_call() -> None:
        stream = await lean.stream_chat(body)
        async for _ in stream:
            pass
        await stream.close()

    rows.append(await _timed("UpstreamClient (aiohttp + our SSE parsing)", lean_call, requests))
    await lean.aclose()

    backend = OpenAICompatBackend("cloud", base_url, "gpt-4o-mini", api_key="x")
    request = _request()

    async def adapter_call() -> None:
        await backend.chat(request)

    rows.append(await _timed("OpenAICompatBackend.chat (the adapter on UpstreamClient)", adapter_call, requests))
    await backend.aclose()
    return rows


def table(requests: int = REQUESTS) -> str:
    """The comparison as a markdown table, against a stub of its own."""
    stub = start_stub()
    try:
        return "\n".join(uvloop.run(measure(stub.base_url + "/v1", requests)))
    finally:
        stub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS)
    print(table(parser.parse_args().requests))


if __name__ == "__main__":
    main()
