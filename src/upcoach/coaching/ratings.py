"""Answer ratings: 1-5 per request, by the user who was served it, for the dashboard and the learned router.

Comments are the user's own words, so they are stored encrypted with the user's data key (the journal's) rather
than dropped: the user can read them back in their data export, admins see only the numbers, and erasure
crypto-shreds them with the rest of the user's text.
"""

from __future__ import annotations

import logging
from datetime import datetime

from cryptography.exceptions import InvalidTag

from upcoach.errors import NotFound
from upcoach.observability.metrics import Metrics
from upcoach.security.vault import DataKeyMissing, UserKeyVault
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.requests import RequestRepository
from upcoach.storage.tables import AnswerFeedbackRow, utc_now

log = logging.getLogger(__name__)

TARGET_AVERAGE = 4.0


def _context(request_id: str) -> str:
    return f"feedback:{request_id}"


class Ratings:
    def __init__(
        self, repository: FeedbackRepository, requests: RequestRepository, vault: UserKeyVault,
        metrics: Metrics | None = None,
    ) -> None:  # fmt: skip
        self._metrics = metrics
        self._repository = repository
        self._requests = requests
        self._vault = vault

    async def rate(
        self, user_id: str, request_id: str, rating: int, comment: str | None
    ) -> tuple[dict[str, object], bool]:
        """(the rating, whether it is new). Only a request this user was served (outcome ok) can be rated, once:
        a second rating replaces the first. Anything else answers exactly like a missing request, and so does a
        request erased while this ran (the fence refuses the rating)."""
        started_at = utc_now()
        if await self._requests.served_to(request_id, user_id) is None:
            raise NotFound(f"request {request_id!r} does not exist", param="requestId")
        blob = None
        if comment:
            cipher = await self._vault.cipher(user_id, create=True)
            blob = cipher.encrypt(comment.encode(), _context(request_id))
        stored = await self._repository.upsert(request_id, user_id, rating, blob, started_at=started_at)
        if stored is None:
            raise NotFound(f"request {request_id!r} does not exist", param="requestId")
        row, created = stored
        if self._metrics is not None:
            self._metrics.answer_rating.observe(rating)  # a replaced rating counts again: a trend, not a tally
        return _to_json(row, comment), created

    async def summary(self, *, since: datetime | None = None) -> dict[str, object]:
        groups = await self._repository.summary(since=since)
        count = sum(group.count for group in groups)
        average = sum(group.average * group.count for group in groups) / count if count else None
        return {
            "count": count,
            "averageRating": average,
            "target": TARGET_AVERAGE,
            "groups": [
                {"processingMode": g.processing_mode, "model": g.model, "count": g.count, "averageRating": g.average}
                for g in groups
            ],
        }

    async def export(self, user_id: str) -> list[dict[str, object]]:
        rows = await self._repository.for_user(user_id)
        try:
            cipher = await self._vault.cipher(user_id) if any(row.comment for row in rows) else None
        except DataKeyMissing:
            cipher = None
        out = []
        for row in rows:
            comment = None
            if row.comment and cipher is not None:
                try:
                    comment = cipher.decrypt(bytes(row.comment), _context(row.request_id)).decode()
                except InvalidTag:
                    log.error("rating comment of %s failed its integrity check", row.request_id)
            out.append(_to_json(row, comment))
        return out

    async def erase(self, user_id: str) -> int:
        deleted = await self._repository.delete_for_user(user_id)
        await self._vault.shred(user_id)
        return deleted


def _to_json(row: AnswerFeedbackRow, comment: str | None) -> dict[str, object]:
    return {
        "requestId": row.request_id,
        "rating": row.rating,
        "comment": comment,
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }
