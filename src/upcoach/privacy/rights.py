"""Data-subject rights (GDPR art. 15/17/20, CCPA): export everything held about a user, and erase it.

Every area that stores personal data registers one *kind* here with an exporter and, when its data can be
deleted, an eraser; ``export`` and ``erase`` then cover the whole service, including areas added later.

The audit trail is exported but never erased. Its rows are HMAC-chained (observability/audit.py): deleting or
editing one breaks verification of every later row, and the trail is what proves, among other things, that an
erasure happened (GDPR art. 5(2) accountability; art. 17(3)(b) and (e) allow keeping such records). So an
erasure appends one ``privacy.erasure`` row that holds only counts per kind and a *keyed* pseudonym of the user:
HMAC-SHA256 under a key derived from the audit key, never the user id in clear. A plain or salted hash stored
next to the counts could be reversed by hashing guessable ids (emails, sequential numbers); the keyed pseudonym
cannot be without the key, while the operator, who holds it, can still answer "was user X erased, and when?".
When the subject erases their own data the row's actor is ``data-subject``, not their id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from upcoach.errors import Unavailable
from upcoach.observability.audit import AuditLog
from upcoach.storage.fences import Fences
from upcoach.storage.tables import utc_now

log = logging.getLogger(__name__)

ExportFn = Callable[[str], Awaitable[list[Any] | dict[str, Any]]]
EraseFn = Callable[[str], Awaitable[int]]
SELF_ACTOR = "data-subject"
_PSEUDONYM_CONTEXT = b"upcoach.privacy.erasure.v1"


@dataclass(frozen=True)
class _Kind:
    export: ExportFn
    erase: EraseFn | None


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class DataRights:
    def __init__(self, audit: AuditLog | None, pseudonym_key: bytes, *, fences: Fences | None = None) -> None:
        self._audit = audit
        self._fences = fences
        # Domain-separated from the audit chain's own use of the key.
        self._key = hmac.new(pseudonym_key, _PSEUDONYM_CONTEXT, hashlib.sha256).digest()
        self._kinds: dict[str, _Kind] = {}

    @property
    def kinds(self) -> list[str]:
        return list(self._kinds)

    def register(self, kind: str, export: ExportFn, erase: EraseFn | None = None) -> None:
        """Add a kind of personal data. ``erase`` None: exported but kept (the audit trail); say why where you
        register it."""
        if kind in self._kinds:
            raise ValueError(f"data kind {kind!r} is already registered")
        self._kinds[kind] = _Kind(export, erase)

    def pseudonym(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()

    async def export(
        self, user_id: str, *, actor: str | None = None, actor_role: str | None = None
    ) -> dict[str, object]:
        """Everything held about ``user_id``, one entry per kind. Audited as ``privacy.export`` when an actor is
        given (after the export, so the document does not contain its own audit row)."""
        data: dict[str, object] = {}
        for kind, entry in self._kinds.items():
            data[kind] = _jsonable(await entry.export(user_id))
        document: dict[str, object] = {"userId": user_id, "exportedAt": utc_now().isoformat(), "data": data}
        if self._audit is not None and actor is not None:
            counts = {kind: len(value) if isinstance(value, list) else 1 for kind, value in data.items()}
            await self._audit.append(
                actor, actor_role or "user", "privacy.export", target=user_id, details={"counts": counts}
            )
        return document

    async def erase(self, user_id: str, actor: str, actor_role: str) -> dict[str, int]:
        """Erase every erasable kind; returns the rows deleted per kind. Every kind is attempted even when one
        fails; the audit row records what was done, then a failure is raised (erasure is idempotent: retry)."""
        counts: dict[str, int] = {}
        failed: list[str] = []
        if self._fences is not None:
            # First the fence, then the deletes: a write that started before now and lands after the deletes
            # (a request still running, a record queued or spooled anywhere) is refused instead of resurrected.
            try:
                await self._fences.erect(user_id)
            except Exception:
                log.exception("erasure fence could not be set")
                failed.append("fence")
        for kind, entry in self._kinds.items():
            if entry.erase is None:
                continue
            try:
                counts[kind] = int(await entry.erase(user_id))
            except Exception:
                log.exception("erasure of %s failed", kind)
                failed.append(kind)
        if self._audit is not None:
            details: dict[str, object] = {"counts": counts, "subject": self.pseudonym(user_id)}
            if failed:
                details["failed"] = failed
            await self._audit.append(SELF_ACTOR if actor == user_id else actor, actor_role, "privacy.erasure",
                                     details=details)  # fmt: skip
        if failed:
            raise Unavailable(f"erasure incomplete, could not erase: {', '.join(failed)}; retry the request")
        return counts
