from __future__ import annotations

import asyncio
import threading

from upcoach.llm.channel import Channel


async def test_items_from_a_thread_arrive_in_order() -> None:
    channel: Channel[int] = Channel(asyncio.get_running_loop())

    def produce() -> None:
        for i in range(1000):
            channel.put(i)
        channel.put(-1)

    thread = threading.Thread(target=produce)
    thread.start()
    received: list[int] = []
    while not received or received[-1] != -1:
        received.extend(await asyncio.wait_for(channel.get_batch(), 5))
    thread.join()
    assert received == [*range(1000), -1]


async def test_get_batch_waits_for_a_put() -> None:
    channel: Channel[str] = Channel(asyncio.get_running_loop())
    waiter = asyncio.create_task(channel.get_batch())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    threading.Thread(target=channel.put, args=("x",)).start()
    assert await asyncio.wait_for(waiter, 5) == ["x"]
