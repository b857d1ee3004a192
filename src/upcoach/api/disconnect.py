"""Non-streamed answers stop when their client leaves.

A streamed response notices a gone client when a write fails, and closing the stream cancels the generation. A
non-streamed one writes nothing until the answer is complete, so without this the model would keep generating for
nobody (holding a batch slot and its KV cells) until the end. ``unless_disconnected`` runs the work beside a watch
on the ASGI receive channel: once the request body has been read, the next message the server delivers is
``http.disconnect``, sent when the client closes the connection. Then the work is cancelled, which closes the
backend's stream, and the local engine frees the sequence within one step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from starlette.exceptions import HTTPException

T = TypeVar("T")
# nginx's "client closed request": nobody reads it, but the access log and the request metrics show it.
CLIENT_CLOSED = 499


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the client disconnects first, ``work`` is cancelled and a 499 raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise HTTPException(CLIENT_CLOSED, "the client closed the connection before the answer was ready")
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
