"""Suggestion chips computed ahead: written in the background as soon as a coaching answer is out, so the
suggestions request that follows (an app asks about a second later) is answered from that result.

Keyed by the conversation state: a hash of the user's id, the language of the chips and the conversation's user and
assistant turns, the answer included (system and tool messages are not what chips answer, and apps often leave
them out of the chips request; whitespace is normalised). Written in the default style with ``AHEAD_COUNT`` chips:
a request for fewer takes the first ones (the branches are decoded most likely first, so they are what the smaller
count starts with), a request for another style or more chips is computed as before.

The work runs at background priority in the local engine (llm/admission.py): it never delays a user request, gives
its slot up when a user request needs it, and is dropped when it cannot start in time. A suggestions request that
arrives while its chips are still being written waits for them (within its own budget) instead of starting over.

Privacy: chips are only ever written by the local side (the backend the suggestions route uses), for answers that
passed the guard, and never for a conversation with signs of self-harm (the hybrid engine does not call us then;
those get the library's support chips). The results live ``ttl`` seconds in this process, and in Redis too when
the API runs several workers (the suggestions request may reach another worker than the answer did), under the
hashed key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from upcoach.coaching.chips import Chip, ChipService, ChipsResult, Declined
from upcoach.language import identify
from upcoach.llm.base import Backend, ChatMessage

log = logging.getLogger(__name__)

AHEAD_COUNT = 3
AHEAD_STYLE = "default"
MAX_ENTRIES = 4096
# The background sequence itself is dropped by the engine when it cannot start in time; this only bounds a hang.
BACKGROUND_BUDGET_MS = 60_000.0
REDIS_PREFIX = "upcoach:chips-ahead:"


def conversation_key(user_id: str | None, messages: Iterable[ChatMessage], locale: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{user_id or ''}\0{_language(locale)}\0".encode())
    for message in messages:
        if message.role in ("user", "assistant"):
            digest.update(f"{message.role}\0{' '.join(message.content.split())}\0".encode())
    return digest.hexdigest()


def _language(locale: str) -> str:
    return locale.split("-")[0].lower()


@dataclass
class AheadStats:
    scheduled: int = 0  # background writes started
    written: int = 0  # ... that gave chips
    declined: int = 0  # ... that did not (preempted, dropped, nothing usable, no model)
    served: int = 0  # suggestions requests answered from a result computed ahead
    missed: int = 0  # suggestions requests (default style, count <= AHEAD_COUNT) that found none


class ChipsAhead:
    """``answered()`` after each coaching answer; ``lookup()`` in the suggestions route."""

    def __init__(
        self,
        chips: ChipService,
        backend: Callable[[], Backend | None],
        *,
        ttl_seconds: float,
        redis: object | None = None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._chips = chips
        self._backend = backend
        self.ttl_seconds = ttl_seconds
        self._redis = redis
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, ChipsResult]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[ChipsResult | None]] = {}
        self.stats = AheadStats()

    def answered(self, user_id: str | None, messages: Iterable[ChatMessage], answer: str) -> None:
        """Start writing the chips of the conversation that ``answer`` ends (returns at once)."""
        if not answer.strip():
            return
        conversation = (*messages, ChatMessage("assistant", answer))
        last_user = next((m.content for m in reversed(conversation) if m.role == "user"), answer)
        locale = identify(last_user)
        key = conversation_key(user_id, conversation, locale)
        if key in self._pending or self._fresh(key) is not None:
            return
        self.stats.scheduled += 1
        task = asyncio.create_task(self._write(key, conversation, locale), name="chips-ahead")
        self._pending[key] = task
        task.add_done_callback(lambda done: self._pending.pop(key, None) if self._pending.get(key) is done else None)

    async def lookup(
        self, user_id: str | None, messages: Iterable[ChatMessage], *, count: int, locale: str, style: str,
        wait_ms: float,
    ) -> ChipsResult | None:  # fmt: skip
        """The chips computed ahead for this conversation state (waiting up to ``wait_ms`` for ones still being
        written), or None: then they are computed as for any request."""
        if style != AHEAD_STYLE or count > AHEAD_COUNT:
            return None
        key = conversation_key(user_id, messages, locale)
        result = self._fresh(key)
        task = self._pending.get(key)
        if result is None and task is not None:
            try:
                result = await asyncio.wait_for(asyncio.shield(task), wait_ms / 1000)
            except TimeoutError:
                result = None
        if result is None and self._redis is not None:
            result = await self._shared(key)
        if result is None:
            self.stats.missed += 1
            return None
        self.stats.served += 1
        return replace(result, precomputed=True, locale=locale)

    async def aclose(self) -> None:
        """Cancel the writes still running (at shutdown, before the engine stops)."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals --------------------------------------------------------------------------------------------
    async def _write(self, key: str, conversation: tuple[ChatMessage, ...], locale: str) -> ChipsResult | None:
        try:
            written = await self._chips.from_model(
                self._backend(), conversation, count=AHEAD_COUNT, locale=locale, style=AHEAD_STYLE,
                budget_ms=BACKGROUND_BUDGET_MS, request_id=f"chips_ahead_{uuid.uuid4().hex}", background=True,
            )  # fmt: skip
        except Exception:  # background work: a failure costs the fast path, never the user's request
            log.exception("chips computed ahead failed")
            written = Declined("failed")
        if isinstance(written, Declined):
            self.stats.declined += 1
            log.debug("chips ahead not written: %s", written.reason)
            return None
        self.stats.written += 1
        self._entries[key] = (time.monotonic() + self.ttl_seconds, written)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        if self._redis is not None:
            await self._share(key, written)
        return written

    def _fresh(self, key: str) -> ChipsResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    async def _share(self, key: str, result: ChipsResult) -> None:
        body = {"chips": [chip.text for chip in result.chips], "model": result.model,
                "modelLatencyMs": result.model_latency_ms}  # fmt: skip
        try:
            await self._redis.set(REDIS_PREFIX + key, json.dumps(body), ex=max(1, int(self.ttl_seconds)))  # type: ignore[attr-defined]
        except Exception:  # Redis down: the other workers compute their chips as before
            log.warning("could not share chips computed ahead through Redis", exc_info=True)

    async def _shared(self, key: str) -> ChipsResult | None:
        try:
            raw = await self._redis.get(REDIS_PREFIX + key)  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not read chips computed ahead from Redis", exc_info=True)
            return None
        if raw is None:
            return None
        body = json.loads(raw)
        chips = [Chip(text, "model") for text in body["chips"]]
        return ChipsResult(chips, "model", body["model"], 0.0, model_latency_ms=body["modelLatencyMs"])
