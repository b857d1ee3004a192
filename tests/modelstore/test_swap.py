"""SwappableBackend's drain contract, step by step. The engines here are gated stand-ins (the real model is used
end to end in tests/api/test_model_api.py): only a stand-in can hold a stream open at an exact point of a swap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from upcoach.errors import Unavailable
from upcoach.llm.base import BackendInfo, ChatMessage, ChatRequest, Chunk, Completion, Health, Usage
from upcoach.modelstore.swap import Loaded, SwappableBackend
from upcoach.modelstore.versions_ab import VersionExperiment


class GatedEngine:
    """Streams "<name>" then waits for ``gate`` before its final chunk; refuses requests once stopped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.gate.set()
        self.stopped = False
        self.served = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        if self.stopped:
            raise Unavailable(f"{self.name} is stopped")
        self.served += 1
        yield Chunk(self.name)
        await self.gate.wait()
        if self.stopped:
            raise Unavailable(f"{self.name} stopped mid-stream")
        yield Chunk(final=Completion("", "stop", Usage(1, 1), self.name, first_token_ms=1.0, total_ms=2.0))

    async def chat(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def health(self) -> Health:
        return Health(not self.stopped, "" if not self.stopped else "stopped")

    def info(self) -> BackendInfo:
        return BackendInfo(name=f"local:{self.name}", kind="local", model=self.name)

    async def stop(self) -> None:
        self.stopped = True


def req(user: str = "u", request_id: str = "r") -> ChatRequest:
    return ChatRequest((ChatMessage("user", "hi"),), request_id=request_id, user_id=user)


async def read_all(backend: SwappableBackend, request: ChatRequest) -> str:
    return "".join([chunk.text async for chunk in backend.stream(request)])


async def test_swap_drains_old_streams_and_routes_new_ones_at_once() -> None:
    old, new = GatedEngine("old"), GatedEngine("new")
    released: list[str] = []

    async def release() -> None:
        released.append("old")

    backend = SwappableBackend(Loaded(old, "m@1", "m", release=release))
    old.gate.clear()
    in_flight = asyncio.create_task(read_all(backend, req()))
    await asyncio.sleep(0.01)  # the stream is open on the old engine, waiting for its gate
    assert backend.open_streams == 1
    swap = asyncio.create_task(backend.swap(Loaded(new, "m@2", "m")))
    await asyncio.sleep(0.01)
    assert not swap.done() and not old.stopped  # waits for the in-flight stream
    assert await read_all(backend, req()) == "new"  # a new request goes to the new engine meanwhile
    assert backend.info().details["version"] == "m@2"
    old.gate.set()
    assert await in_flight == "old"  # finished on the engine it started on
    assert (await swap).version_id == "m@1"
    assert old.stopped and released == ["old"] and not new.stopped
    assert backend.open_streams == 0


async def test_closing_a_stream_early_counts_as_drained() -> None:
    old = GatedEngine("old")
    backend = SwappableBackend(Loaded(old, "m@1", "m"))
    old.gate.clear()
    stream = backend.stream(req())
    assert (await stream.__anext__()).text == "old"
    swap = asyncio.create_task(backend.swap(Loaded(GatedEngine("new"), "m@2", "m")))
    await asyncio.sleep(0.01)
    assert not swap.done()
    await stream.aclose()  # the client went away
    await asyncio.wait_for(swap, 1)
    assert old.stopped


async def test_nothing_loaded_is_unavailable_with_the_reason() -> None:
    backend = SwappableBackend()
    backend.problem = "local model is loading"
    assert (await backend.health()).reason == "local model is loading"
    with pytest.raises(Unavailable):
        await read_all(backend, req())


async def test_experiment_splits_traffic_and_stop_or_promote_retire_the_right_engine() -> None:
    active, candidate = GatedEngine("active"), GatedEngine("candidate")
    backend = SwappableBackend(Loaded(active, "m@1", "m"))
    experiment = VersionExperiment("m@1", "m@2", 0.5, salt="s")
    backend.start_experiment(Loaded(candidate, "m@2", "m"), experiment)
    answers = {u: await read_all(backend, req(u, f"r-{u}")) for u in (f"user{i}" for i in range(60))}
    assert {experiment.arm(req(u)) for u in answers} == {"active", "candidate"}
    assert all(text == experiment.arm(req(u)) for u, text in answers.items())
    assert experiment.stats["m@1"].requests + experiment.stats["m@2"].requests == 60
    retired = await backend.stop_experiment(promote=False)
    assert retired is not None and retired.version_id == "m@2" and candidate.stopped and not active.stopped
    assert await read_all(backend, req("anyone")) == "active"

    second = GatedEngine("second")
    backend.start_experiment(Loaded(second, "m@3", "m"), VersionExperiment("m@1", "m@3", 1.0))
    retired = await backend.stop_experiment(promote=True)
    assert retired is not None and retired.version_id == "m@1" and active.stopped
    assert await read_all(backend, req("anyone")) == "second"
