"""The interactive terminal chat behind ``upcoach chat``: in process, or against a running server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rich.console import Console

from upcoach.config import Settings
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams


async def _remote_tokens(
    url: str, model: str, history: list[ChatMessage], max_tokens: int, api_key: str | None
) -> AsyncIterator[str]:
    from openai import AsyncOpenAI

    # A server with auth off accepts any key; one with auth on needs the caller's (--key / UPCOACH_API_KEY).
    client = AsyncOpenAI(base_url=url, api_key=api_key or "local")
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": m.role, "content": m.content} for m in history],  # type: ignore[misc]
        max_tokens=max_tokens,
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


async def run_chat(
    settings: Settings,
    *,
    system: str | None,
    url: str | None,
    max_tokens: int,
    console: Console,
    api_key: str | None = None,
) -> None:
    engine = None
    if url is None:
        from upcoach.app import engine_config
        from upcoach.llm.llamacpp import LlamaCppEngine

        engine = LlamaCppEngine(engine_config(settings))
        with console.status("loading model..."):
            await engine.start()
        if not engine.ready:
            console.print(f"[red]{(await engine.health()).reason}[/red]")
            return
    history: list[ChatMessage] = [ChatMessage("system", system)] if system else []
    console.print("[dim]UpCoach chat. /reset clears the conversation, /exit quits.[/dim]")
    try:
        while True:
            try:
                line = await asyncio.to_thread(console.input, "[bold green]you>[/bold green] ")
            except EOFError:
                break
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                history = history[:1] if system else []
                continue
            if not text:
                continue
            history.append(ChatMessage("user", text))
            console.print("[bold blue]coach>[/bold blue] ", end="")
            parts: list[str] = []
            if engine is not None:
                request = ChatRequest(tuple(history), GenerationParams(max_tokens=max_tokens))
                tokens: AsyncIterator[str] = (c.text async for c in engine.stream(request) if c.text)
            else:
                tokens = _remote_tokens(url or "", "default", history, max_tokens, api_key)
            async for piece in tokens:
                parts.append(piece)
                console.print(piece, end="", markup=False, highlight=False)
            console.print()
            history.append(ChatMessage("assistant", "".join(parts)))
    finally:
        if engine is not None:
            await engine.stop()
