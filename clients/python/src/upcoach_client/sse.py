"""Server-sent events (the ``text/event-stream`` answers of streaming requests), from lines to events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from upcoach_client.models import StreamEvent


class _Frames:
    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        if line == "":
            if not self.data:
                self.event = "message"
                return None
            raw = "\n".join(self.data)
            event = StreamEvent(self.event, json.loads(raw) if raw.startswith(("{", "[")) else raw)
            self.event, self.data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def events(lines: Iterator[str]) -> Iterator[StreamEvent]:
    frames = _Frames()
    for line in lines:
        event = frames.feed(line)
        if event is not None:
            yield event
    last = frames.feed("")
    if last is not None:
        yield last


async def aevents(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    frames = _Frames()
    async for line in lines:
        event = frames.feed(line)
        if event is not None:
            yield event
    last = frames.feed("")
    if last is not None:
        yield last
