"""Admission order and preemption (llm/admission.py): the rules on their own, then background chips on the real
model giving way to a user request that arrives after them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tests.llm.test_scheduler import admitted, ask, drain, live_cells
from upcoach.coaching.chips import chip_grammar, system_prompt
from upcoach.errors import Overloaded
from upcoach.llm import admission
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import LlamaCppEngine


def waiting(kind: str, enqueued: float) -> SimpleNamespace:
    request = SimpleNamespace(branches=3 if kind == "chips" else 1, background=kind == "background")
    return SimpleNamespace(job=SimpleNamespace(request=request, enqueued=enqueued), kind=kind)


def order(arrivals: list[tuple[str, float]], now: float) -> list[str]:
    room: list[SimpleNamespace] = []
    for kind, at in arrivals:
        sequence = waiting(kind, at)
        room.insert(admission.position(room, sequence, now if now else at), sequence)
    return [f"{s.kind}@{s.job.enqueued:g}" for s in room]


def test_classes_go_chips_then_answers_then_background_and_arrivals_stay_in_order() -> None:
    arrivals = [("background", 0), ("answer", 1), ("background", 2), ("chips", 3), ("answer", 4), ("chips", 5)]
    assert order(arrivals, 0) == [
        "chips@3", "chips@5", "answer@1", "answer@4", "background@0", "background@2",
    ]  # fmt: skip


def test_a_user_request_that_waited_long_is_not_overtaken_but_background_always_is() -> None:
    late = admission.OVERTAKE_LIMIT_S + 1
    room = [waiting("answer", 0.0), waiting("background", 0.0)]
    # Chips arriving after the answer waited past the limit queue behind it; they still go before background work.
    assert admission.position(room, waiting("chips", late), late) == 1
    assert admission.position(room, waiting("answer", late), late) == 1
    assert admission.position(room, waiting("chips", 1.0), 1.0) == 0


def test_background_work_gives_way_and_is_dropped_when_it_waited_too_long() -> None:
    user, chips_ahead = waiting("answer", 5.0), waiting("background", 0.0)
    running = [waiting("answer", 0.0), chips_ahead, waiting("chips", 1.0)]
    assert admission.victim(user, running) is chips_ahead
    assert admission.victim(waiting("background", 6.0), running) is None  # background never preempts
    assert admission.victim(user, [waiting("answer", 0.0)]) is None
    old = admission.BACKGROUND_MAX_WAIT_S + 1
    assert admission.expired([chips_ahead, user], old) == [chips_ahead]
    assert admission.expired([chips_ahead, user], 1.0) == []


def test_the_first_token_estimate_counts_the_prompt_tokens_ahead_and_the_step_time() -> None:
    idle = admission.ttft_estimate_ms(0.0, 0, 100, 128, 50.0)
    busy = admission.ttft_estimate_ms(0.0, 600, 100, 128, 50.0)
    assert idle == 2 * 50.0  # its own prompt fits one chunk, then the step that samples the first token
    assert busy == (6 + 1) * 50.0
    assert admission.ttft_estimate_ms(1000.0, 0, 100, 128, 50.0) == 1000.0 + idle


on_the_real_model = pytest.mark.asyncio(loop_scope="session")


def background_chips(question: str) -> ChatRequest:
    messages = (ChatMessage("system", system_prompt("default", "en")),
                ChatMessage("user", f"User: {question}\nWrite 3 replies."))  # fmt: skip
    return ChatRequest(messages, GenerationParams(max_tokens=12, temperature=0.0), grammar=chip_grammar(1),
                       branches=3, background=True)  # fmt: skip


@on_the_real_model
async def test_a_user_request_arriving_while_chips_are_computed_ahead_is_admitted_before_them(
    llama_engine: LlamaCppEngine,
) -> None:
    engine = llama_engine
    scheduler = engine._scheduler
    assert scheduler is not None
    # Each takes 3 sequence ids: the first ones take every id there is, so the last waits, and the user needs one.
    spare_ids = engine.config.parallel + 4
    questions = [f"I keep putting off task number {i} at work." for i in range(spare_ids // 3 + 1)]
    gave_way = scheduler.step.preempted + scheduler.step.dropped
    background = list(await asyncio.gather(*(admitted(engine, background_chips(q)) for q in questions)))
    user = await admitted(engine, ask("How do I sleep better before exams?", 8))
    first = await anext(user)  # type: ignore[call-overload]
    # At the user's first token, background work that arrived before it is still waiting (it was overtaken), or
    # gave its sequence ids up to the user (preempted: every id was taken when the user came), or, on a machine so
    # loaded that it waited past BACKGROUND_MAX_WAIT_S, was dropped. Never the other way round.
    overtaken = [s for s in scheduler.waiting if s.job.request.background]
    assert first.text and (overtaken or scheduler.step.preempted + scheduler.step.dropped > gave_way), first
    _, final = await drain(user)
    await user.aclose()  # type: ignore[attr-defined]
    assert final.finish_reason == "length" and final.usage.completion_tokens == 8

    async def outcome(stream: object) -> str:
        try:
            _, done = await drain(stream)
        except Overloaded as exc:  # gave its slot up, or waited too long
            assert "background work" in exc.message
            return "gave way"
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        assert done.finish_reason == "stop"
        return "done"

    results = await asyncio.gather(*(outcome(stream) for stream in background))
    assert "done" in results, results
    assert engine._background == 0 and engine.pending == 0
    assert live_cells(engine) == [-1] * len(live_cells(engine))


@on_the_real_model
async def test_the_router_reads_the_first_token_estimate_of_the_live_batch(llama_engine: LlamaCppEngine) -> None:
    from upcoach.routing.engine import _estimate_local_ttft

    await llama_engine.chat(ask("How do I keep calm in long meetings?", 4))  # a step is measured
    idle = llama_engine.estimated_ttft_ms()
    assert idle is not None and idle > 0
    assert _estimate_local_ttft(llama_engine, 0) == llama_engine.info().details["estimated_ttft_ms"]
    long_question = "Here is my week, hour by hour: " + " ".join(f"at {h} I worked on task {h}." for h in range(40))
    streams = [await admitted(llama_engine, ask(long_question, 4)) for _ in range(2)]
    # Two long prompts still to prefill ahead of a newcomer: its first token is further away than when idle.
    busy = llama_engine.estimated_ttft_ms()
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    assert busy is not None and busy > idle, (busy, idle)
