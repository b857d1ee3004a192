"""A Redis client that sends the commands of concurrent requests together, one pipelined round trip per batch.

With several workers each request makes a handful of small Redis calls (the key cache's and the privacy cache's
change counters, the rate limit, the cloud breaker, the budget). Sent one by one, 1,000 concurrent requests need
thousands of round trips and as many connection checkouts: the pool ran dry ("No connection available") and two
workers served fewer answers per second than one. Here every single command issued in one turn of the event loop
(or while every batch slot is busy) goes out in one pipeline on one connection, so the round trips per second stay
bounded by the batch slots whatever the load, and a lone request pays what it paid before (its command leaves on
the next loop turn).

Semantics are those of separate commands: a pipeline without MULTI, each reply (or error, such as NOSCRIPT, which
the caller's script object then handles by loading the script) goes to its own caller, and a connection failure
fails every command of its batch, as it would have failed each. Explicit pipelines without MULTI join the batch
too (their commands together and in order); MULTI pipelines, commands that block or hold a connection (``BLOCKING``)
and pub/sub go straight to the pool as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

# Commands that wait server-side or change the connection's state: never mixed into a shared pipeline.
BLOCKING = frozenset(
    {"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP", "XREAD", "XREADGROUP",
     "WAIT", "WAITAOF", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "WATCH", "MULTI", "SELECT", "CLIENT"}
)  # fmt: skip
MAX_BATCHES = 8  # pipelines in flight per client: a fraction of the pool, which stays free for explicit pipelines

_Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class BatchedRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose single commands are pipelined with the other callers' commands of the same
    event-loop turn. ``round_trips`` and ``commands`` count what was sent (the ratio is the batching's gain)."""

    def __init__(self, *args: Any, max_batches: int = MAX_BATCHES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_batches = max_batches
        self._queue: list[_Pending] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self.commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).split(" ", 1)[0].upper() if args else ""
        if self.connection is not None or name in BLOCKING:
            self.round_trips += 1
            self.commands += 1
            return await super().execute_command(*args, **options)
        return await self._enqueue(args, options)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A MULTI pipeline as usual; one without MULTI joins the shared batch (its commands in order, together)."""
        if transaction:
            return super().pipeline(transaction, shard_hint)
        return _SharedPipeline(self, self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def _enqueue(self, args: tuple[Any, ...], options: dict[str, Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, options, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue or self._in_flight >= self._max_batches:
            return  # a batch that ends picks the queue up
        batch, self._queue = self._queue, []
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            live = [item for item in batch if not item[2].done()]  # callers cancelled before the send are dropped
            if not live:
                return
            pipe = Pipeline(self.connection_pool, self.response_callbacks, False, None)
            for args, options, _ in live:
                pipe.pipeline_execute_command(*args, **options)
            self.round_trips += 1
            self.commands += len(live)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the connection failed: every command of the batch fails with it
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                return
            except BaseException:
                for _, _, future in live:
                    future.cancel()
                raise
            for (_, _, future), reply in zip(live, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().aclose(close_connection_pool)


class _SharedPipeline(Pipeline):
    """An explicit pipeline without MULTI whose commands go out in the owner's shared batch: a caller that groups
    its commands (security/throttle.py) needs no connection of its own either."""

    def __init__(self, owner: BatchedRedis, *args: Any) -> None:
        super().__init__(*args)
        self._owner = owner

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.is_transaction or self.explicit_transaction or self.watching or self.scripts:
            return await super().execute(raise_on_error)
        stack, self.command_stack = self.command_stack, []
        futures = [self._owner._enqueue(args, options) for args, options in stack]  # one batch, in order
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            # A failed connection fails the pipeline, as it does a pipeline of its own; error replies only if asked.
            if isinstance(reply, BaseException) and (raise_on_error or not isinstance(reply, ResponseError)):
                raise reply
        return replies
