"""The voice journal: transcripts the app sends, stored encrypted per user and processed on this server only.

Each entry is analysed locally: sentiment (VADER, English only: other languages are marked ``unsupported``),
themes (a keyword lexicon, coaching/themes.py) and a short insight written by the local model. The cloud is never
called: the local backend is used directly, bypassing the hybrid router. When the local model cannot answer
(loading, busy, down, too slow) the entry is still stored with its insight ``pending``; pending insights are
retried when the user next reads their insights. Before anything is stored or sent to the model, the transcript
passes the same guard as a chat message (a check that cannot run refuses the entry: 503
``security_check_failed``); an entry with signs of self-harm is flagged ``self_harm`` and its insight starts with
the crisis resources, even while the model's sentence is still pending.

Everything derived from the transcript lives inside one AES-GCM ciphertext under the user's data key
(security/vault.py); the transcript never reaches request records, metrics or logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidTag

from upcoach.coaching.sentiment import Sentiment, analyse
from upcoach.coaching.themes import themes_of
from upcoach.errors import DataErased, NotFound, UpcoachError
from upcoach.language import identify
from upcoach.llm.base import Backend, ChatMessage, ChatRequest, GenerationParams
from upcoach.privacy.crisis import crisis_resources
from upcoach.security.guard import Guard
from upcoach.security.vault import DataKeyMissing, UserCipher, UserKeyVault
from upcoach.storage.journal import JournalRepository
from upcoach.storage.tables import JournalEntryRow, utc_now

log = logging.getLogger(__name__)

INSIGHT_SYSTEM_PROMPT = (
    "You are UpCoach, a warm and practical coach. The user recorded the private journal entry below. Reply with "
    "one or two short sentences: a kind observation about what they seem to feel or need, then one small, concrete "
    "next step. Do not repeat the entry, do not diagnose, no lists."
)
INSIGHT_MAX_TOKENS = 60
# The start of a long entry says enough for two sentences, and prefill is the cost here (~200 tokens/s on two
# cores): 2,000 characters (about three minutes of speech) keep an insight within a few seconds.
INSIGHT_MAX_CHARS = 2000
RETRY_PER_READ = 3

SENTIMENT_MODEL = "VADER lexicon (English only; other languages: unsupported)"
THEME_MODEL = "keyword lexicon (English)"


MAX_TRANSCRIPT_CHARS = 20_000


@dataclass
class JournalEntry:
    id: str
    recorded_at: datetime
    created_at: datetime
    transcript: str
    mood: int | None
    sentiment: Sentiment
    themes: list[str] = field(default_factory=list)
    insight: str | None = None
    insight_status: str = "pending"
    flags: list[str] = field(default_factory=list)

    def payload(self) -> bytes:
        return json.dumps(
            {"transcript": self.transcript, "mood": self.mood, "sentiment": self.sentiment.to_json(),
             "themes": self.themes, "insight": self.insight, "flags": self.flags},
            ensure_ascii=False,
        ).encode()  # fmt: skip

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "recordedAt": self.recorded_at.isoformat(),
            "createdAt": self.created_at.isoformat(),
            "transcript": self.transcript,
            "mood": self.mood,
            "sentiment": self.sentiment.to_json(),
            "themes": self.themes,
            "insight": self.insight,
            "insightStatus": self.insight_status,
            "flags": self.flags,
        }


def _context(entry_id: str) -> str:
    # Bound into the ciphertext: a payload copied onto another row fails to decrypt.
    return f"journal:{entry_id}"


def _decode(row: JournalEntryRow, cipher: UserCipher) -> JournalEntry:
    data = json.loads(cipher.decrypt(bytes(row.payload), _context(row.id)))
    sentiment = data["sentiment"]
    return JournalEntry(
        id=row.id,
        recorded_at=row.recorded_at,
        created_at=row.created_at,
        transcript=data["transcript"],
        mood=data["mood"],
        sentiment=Sentiment(sentiment["language"], sentiment["compound"], sentiment["label"]),
        themes=list(data["themes"]),
        insight=data["insight"],
        insight_status=row.insight_status,
        flags=list(data.get("flags", [])),  # entries stored before flags existed have none
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _trend(groups: dict[str, list[JournalEntry]], label: str) -> list[dict[str, object]]:
    return [
        {
            label: key,
            "entries": len(entries),
            "sentiment": _mean([e.sentiment.compound for e in entries if e.sentiment.compound is not None]),
            "mood": _mean([float(e.mood) for e in entries if e.mood is not None]),
        }
        for key, entries in sorted(groups.items())
    ]


class Journal:
    def __init__(
        self,
        repository: JournalRepository,
        vault: UserKeyVault,
        local: Callable[[], Backend | None],
        *,
        guard: Guard,
        insight_timeout: float = 30.0,
    ) -> None:
        self._repository = repository
        self._vault = vault
        self._local = local
        self._guard = guard
        self._timeout = insight_timeout

    async def add(self, user_id: str, transcript: str, recorded_at: datetime, mood: int | None) -> JournalEntry:
        started_at = utc_now()
        entry_id = uuid.uuid4().hex
        inspection = await self._guard.check(
            (ChatMessage("user", transcript),), request_id=f"journal_{entry_id}", user_id=user_id, endpoint="journal"
        )
        self_harm = inspection.self_harm
        entry = JournalEntry(
            id=entry_id,
            recorded_at=recorded_at,
            created_at=utc_now(),
            transcript=transcript,
            mood=mood,
            sentiment=analyse(transcript),
            themes=themes_of(transcript),
            insight=crisis_resources(identify(transcript)) if self_harm else None,
            flags=["self_harm"] if self_harm else [],
        )
        cipher = await self._vault.cipher(user_id, create=True)
        # Stored before the model runs: an entry must never be lost because the insight could not be written.
        stored = await self._repository.add(
            JournalEntryRow(
                id=entry_id, user_id=user_id, recorded_at=recorded_at, created_at=entry.created_at,
                insight_status="pending", payload=cipher.encrypt(entry.payload(), _context(entry_id)),
            ),
            started_at=started_at,
        )  # fmt: skip
        if not stored:  # the user erased their data while this entry was being made: it must not come back
            raise DataErased("your data was erased while this entry was being saved; it was not stored")
        await self._complete(user_id, entry, cipher)
        return entry

    async def page(self, user_id: str, *, limit: int, offset: int) -> tuple[list[JournalEntry], bool]:
        rows = await self._repository.page(user_id, limit=limit + 1, offset=offset)
        entries = await self._decode_all(user_id, rows[:limit])
        return entries, len(rows) > limit

    async def delete(self, user_id: str, entry_id: str) -> None:
        if not await self._repository.delete(entry_id, user_id):
            raise NotFound(f"journal entry {entry_id!r} does not exist", param="id")

    async def insights(self, user_id: str, start: datetime | None, end: datetime | None) -> dict[str, object]:
        """Mood trend per day and ISO week, recurring themes with counts, and the entries' insights."""
        entries = await self._decode_all(user_id, await self._repository.between(user_id, start, end))
        pending = [entry for entry in entries if entry.insight_status == "pending"]
        if pending:
            cipher = await self._vault.cipher(user_id)
            for entry in pending[-RETRY_PER_READ:]:
                if not await self._complete(user_id, entry, cipher):
                    break  # the model is still unavailable: do not wait on it once per entry
        daily: dict[str, list[JournalEntry]] = defaultdict(list)
        weekly: dict[str, list[JournalEntry]] = defaultdict(list)
        themes: Counter[str] = Counter()
        for entry in entries:
            daily[entry.recorded_at.date().isoformat()].append(entry)
            year, week, _ = entry.recorded_at.isocalendar()
            weekly[f"{year}-W{week:02d}"].append(entry)
            themes.update(entry.themes)
        languages = Counter(entry.sentiment.language for entry in entries)
        return {
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "entries": len(entries),
            "languages": dict(languages),
            "moodTrend": {"daily": _trend(daily, "date"), "weekly": _trend(weekly, "week")},
            # Recurring: mentioned in at least two entries, most frequent first.
            "themes": [{"theme": name, "count": count} for name, count in themes.most_common() if count >= 2],
            "insights": [
                {"entryId": e.id, "recordedAt": e.recorded_at.isoformat(), "insight": e.insight}
                for e in entries
                if e.insight
            ],
            "pendingInsights": sum(entry.insight_status == "pending" for entry in entries),
            "models": {"sentiment": SENTIMENT_MODEL, "themes": THEME_MODEL, "insights": "local model only"},
        }

    async def export(self, user_id: str) -> list[dict[str, object]]:
        entries = await self._decode_all(user_id, await self._repository.between(user_id))
        return [entry.to_json() for entry in entries]

    async def erase(self, user_id: str) -> int:
        """Delete the rows and shred the user's data key, so copies of the rows (backups) stay unreadable."""
        deleted = await self._repository.delete_for_user(user_id)
        await self._vault.shred(user_id)
        return deleted

    async def _decode_all(self, user_id: str, rows: list[JournalEntryRow]) -> list[JournalEntry]:
        if not rows:
            return []
        try:
            cipher = await self._vault.cipher(user_id)
        except DataKeyMissing:
            return []  # shredded: whatever rows survive are unreadable by design
        entries = []
        for row in rows:
            try:
                entries.append(_decode(row, cipher))
            except InvalidTag:
                log.error("journal entry %s failed its integrity check and is skipped", row.id)
        return entries

    async def _complete(self, user_id: str, entry: JournalEntry, cipher: UserCipher) -> bool:
        insight = await self._write_insight(entry)
        if insight is None:
            return False
        if "self_harm" in entry.flags:
            insight = f"{crisis_resources(identify(entry.transcript))}\n\n{insight}"
        entry.insight, entry.insight_status = insight, "ready"
        await self._repository.update(entry.id, user_id, cipher.encrypt(entry.payload(), _context(entry.id)), "ready")
        return True

    async def _write_insight(self, entry: JournalEntry) -> str | None:
        backend = self._local()
        if backend is None or not (await backend.health()).ok:
            return None
        request = ChatRequest(
            messages=(
                ChatMessage("system", INSIGHT_SYSTEM_PROMPT),
                ChatMessage("user", entry.transcript[:INSIGHT_MAX_CHARS]),
            ),
            params=GenerationParams(max_tokens=INSIGHT_MAX_TOKENS, temperature=0.3),
            request_id=f"journal_{entry.id}",
        )
        try:
            completion = await asyncio.wait_for(backend.chat(request), self._timeout)
        except (UpcoachError, TimeoutError) as exc:
            # The error's class only: its message could quote the request.
            log.warning("journal insight left pending: %s", type(exc).__name__)
            return None
        return completion.text.strip() or None
