"""A one-producer (a worker thread), one-consumer (a coroutine) channel that wakes the event loop at most once
per batch of items: while the consumer has not drained, further puts cost a deque append and nothing on the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[T] = deque()
        self._event = asyncio.Event()
        self._lock = threading.Lock()
        self._wakeup_pending = False

    def put(self, item: T) -> None:
        """Called from the worker thread."""
        with self._lock:
            self._items.append(item)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def get_batch(self) -> list[T]:
        """Wait for at least one item, then return everything queued so far."""
        while True:
            with self._lock:
                if self._items:
                    batch = list(self._items)
                    self._items.clear()
                    self._wakeup_pending = False
                    self._event.clear()
                    return batch
                self._wakeup_pending = False
            self._event.clear()
            await self._event.wait()
