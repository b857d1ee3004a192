"""Coach grants: a client lets one human coach read some of their data, until it expires or they revoke it.

A grant names the coach (their user id), the scopes (``journal``, ``insights``, ``requests``: which routes each
opens is in security/acting.py and the README) and an optional expiry. It is read from the database on every
request a coach makes, never cached, so revocation and expiry take effect on the next request. Grants are the
client's data: they are in the client's export, and erasure deletes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from upcoach.errors import DataErased, InvalidRequest, NotFound
from upcoach.observability.audit import AuditLog
from upcoach.security.acting import SCOPES, Scope, checked_user_id
from upcoach.storage.grants import GrantRepository
from upcoach.storage.tables import CoachGrantRow, utc_now

# A client has a few coaches; a bound keeps one account from filling the table.
MAX_LIVE_GRANTS = 50


@dataclass(frozen=True)
class Grant:
    id: str
    user_id: str
    coach_id: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_json(self, now: datetime) -> dict[str, object]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "coachId": self.coach_id,
            "scopes": list(self.scopes),
            "createdAt": self.created_at.isoformat(),
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "revokedAt": self.revoked_at.isoformat() if self.revoked_at else None,
            "active": self.live(now),
        }


def _grant(row: CoachGrantRow) -> Grant:
    scopes = tuple(scope for scope in SCOPES if scope in row.scopes)
    return Grant(row.id, row.user_id, row.coach_id, scopes, row.created_at, row.expires_at, row.revoked_at)


def _scopes(values: Sequence[str]) -> tuple[Scope, ...]:
    unknown = sorted(set(values) - set(SCOPES))
    if unknown or not values:
        raise InvalidRequest(f"scopes: give one or more of {', '.join(SCOPES)}", param="scopes")
    return tuple(scope for scope in SCOPES if scope in values)


class Grants:
    def __init__(
        self, repository: GrantRepository, audit: AuditLog, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._repository = repository
        self._audit = audit
        self._clock = clock

    async def give(
        self,
        user_id: str,
        coach_id: str,
        scopes: Sequence[str],
        expires_at: datetime | None,
        *,
        actor: str,
        actor_role: str,
    ) -> Grant:
        started_at = utc_now()  # the fence's clock (storage/fences.py), whatever clock the grants use
        coach_id = checked_user_id(coach_id.strip(), "coachId")
        if coach_id == user_id:
            raise InvalidRequest("coachId: a grant to yourself means nothing", param="coachId")
        chosen = _scopes(scopes)
        now = self._clock()
        if expires_at is not None and (expires_at.utcoffset() is None or expires_at <= now):
            raise InvalidRequest("expiresAt must be a future time with a zone", param="expiresAt")
        if await self._repository.count_live(user_id, now) >= MAX_LIVE_GRANTS:
            raise InvalidRequest(f"at most {MAX_LIVE_GRANTS} live grants; revoke one first", param="coachId")
        row = CoachGrantRow(
            id=uuid.uuid4().hex, user_id=user_id, coach_id=coach_id, scopes=list(chosen), created_at=now,
            expires_at=expires_at, revoked_at=None,
        )  # fmt: skip
        if not await self._repository.add(row, started_at=started_at):
            raise DataErased("your data was erased while this grant was being given; it was not stored")
        await self._audit.append(actor, actor_role, "privacy.grant.created", target=row.id, details={
            "user_id": user_id, "coach_id": coach_id, "scopes": list(chosen),
            "expires_at": expires_at.isoformat() if expires_at else None,
        })  # fmt: skip
        return _grant(row)

    async def given_by(self, user_id: str) -> list[Grant]:
        return [_grant(row) for row in await self._repository.given_by(user_id)]

    async def received_by(self, coach_id: str) -> list[Grant]:
        """The live grants naming this coach."""
        return [_grant(row) for row in await self._repository.live_for(coach_id, self._clock())]

    async def revoke(self, grant_id: str, user_id: str, *, actor: str, actor_role: str) -> Grant:
        """Revoke one of the user's grants at once (idempotent). Someone else's grant answers like a missing one."""
        now = self._clock()
        row, changed = await self._repository.revoke(grant_id, user_id, now)
        if row is None:
            raise NotFound(f"grant {grant_id!r} does not exist", param="id")
        grant = _grant(row)
        if changed:
            await self._audit.append(actor, actor_role, "privacy.grant.revoked", target=grant_id,
                                     details={"user_id": user_id, "coach_id": grant.coach_id})  # fmt: skip
        return grant

    async def allows(self, coach_id: str, user_id: str, scope: Scope) -> bool:
        """Whether a live grant from ``user_id`` lets ``coach_id`` read ``scope`` now (read fresh every time)."""
        rows = await self._repository.live_for(coach_id, self._clock(), user_id)
        return any(scope in row.scopes for row in rows)

    async def export(self, user_id: str) -> list[dict[str, object]]:
        now = self._clock()
        return [grant.to_json(now) for grant in await self.given_by(user_id)]

    async def erase(self, user_id: str) -> int:
        return await self._repository.delete_for_user(user_id)
