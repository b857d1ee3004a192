"""``Phone``: what the app does per request, put together. Ask the server for routing advice when it is reachable,
let the adaptive controller choose, answer on the device, on the server or from the verified strategies library,
and keep a record of the turn (and of journal entries and ratings) in the encrypted outbox until sync delivers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from upcoach_client.client import Client
from upcoach_client.device.controller import Choice, DeviceState, decide
from upcoach_client.device.offline import StrategiesCache
from upcoach_client.device.runtime import LocalModel
from upcoach_client.device.store import LocalStore
from upcoach_client.errors import ConnectionFailed, RateLimited, Unavailable
from upcoach_client.models import DeviceProfile, PrivacyLevel

AnsweredBy = Literal["device", "server", "library", "none"]
LIBRARY_NOTE = "(offline: from the strategies library)"


@dataclass(frozen=True)
class Reply:
    text: str
    answered_by: AnsweredBy
    reasons: tuple[str, ...]
    request_id: str | None = None


class Phone:
    def __init__(
        self,
        client: Client,
        store: LocalStore,
        strategies: StrategiesCache,
        *,
        profile: DeviceProfile,
        model: LocalModel | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.strategies = strategies
        self.profile = profile
        self.model = model

    def answer(
        self,
        messages: Sequence[dict[str, str]],
        state: DeviceState,
        *,
        privacy_level: PrivacyLevel = "private",
        max_tokens: int = 96,
    ) -> Reply:
        state = replace(state, model_ready=self.model is not None)
        advice = None
        if state.network != "offline" and privacy_level != "sensitive":
            try:
                advice = self.client.route(messages, privacy_level=privacy_level, device=self.profile)
            except (ConnectionFailed, Unavailable, RateLimited):
                state = replace(state, network="offline")
        reply = self._answer(messages, decide(state, privacy_level, advice), privacy_level, max_tokens)
        self.store.add("turn", {"answeredBy": reply.answered_by, "privacyLevel": privacy_level,
                                "messages": [*messages, {"role": "assistant", "content": reply.text}]})  # fmt: skip
        return reply

    def _answer(
        self, messages: Sequence[dict[str, str]], choice: Choice, privacy_level: PrivacyLevel, max_tokens: int
    ) -> Reply:
        if choice.target == "device" and self.model is not None:
            text = "".join(self.model.stream(messages, max_tokens=max_tokens))
            return Reply(text, "device", choice.reasons)
        if choice.target == "server":
            try:
                answer = self.client.process(
                    messages, privacy_level=privacy_level, device=self.profile, max_tokens=max_tokens
                )
                return Reply(answer.content, "server", (*choice.reasons, *answer.reasons), answer.request_id)
            except (ConnectionFailed, Unavailable):
                choice = Choice("later", (*choice.reasons, "the server did not answer"))
        user_text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = self.strategies.answer(user_text)
        if text is None:
            return Reply("", "none", (*choice.reasons, "no strategies bundle on the phone yet"))
        return Reply(f"{text} {LIBRARY_NOTE}", "library", (*choice.reasons, "answered from the verified library"))

    def journal(self, transcript: str, recorded_at: str, mood: int | None = None) -> str:
        """Keep a journal entry in the outbox (its client id is returned); sync delivers it exactly once."""
        data: dict[str, Any] = {"transcript": transcript, "recordedAt": recorded_at}
        if mood is not None:
            data["mood"] = mood
        return self.store.add("journal", data)

    def rate(self, request_id: str, rating: int, comment: str | None = None) -> str:
        data: dict[str, Any] = {"requestId": request_id, "rating": rating}
        if comment:
            data["comment"] = comment
        return self.store.add("rating", data)
