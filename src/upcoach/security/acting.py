"""Who may act for whom: whose data a request is about, and whether the caller may touch it.

Every principal acts as itself. Naming another user (``X-User-Id``, or the body's ``user`` on the OpenAI route)
is allowed per *use* of that user's data, by the table ``USES`` below:

- ``service`` (the coaching app's backend) and ``admin`` may act for any user and read their journal, insights
  and request records; only ``admin`` may act on another user's privacy settings and data rights;
- ``auditor`` may read a user's request records (metadata, never text), nothing else;
- ``coach`` (a human coach) may read a client's journal, insights or request records only while that client has
  granted that scope to them (privacy/grants.py): checked on every request, so a revoked or expired grant stops
  working at once;
- ``user`` never names anyone else: a different ``X-User-Id`` is refused (403), not silently ignored.

Local development (auth off) acts as the admin ``dev``. Every call on another user's data is an audit row, written
before the data is touched, with the acting principal: ``data.viewed`` for reads, ``data.acted_for`` for anything
else (chats, writes). A row that cannot be written refuses the call (503 ``access_not_recorded``): nobody reads
someone else's data unrecorded. The user sees these rows on their dashboard and in their data export.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args

from fastapi import Request

from upcoach.errors import AccessNotRecorded, Forbidden, GrantRequired, InvalidRequest
from upcoach.observability.audit import AuditLog
from upcoach.security.auth import Principal, principal_of
from upcoach.security.keys import Role

log = logging.getLogger(__name__)

MAX_USER_ID = 128  # the user_id columns are String(128)

Scope = Literal["journal", "insights", "requests"]
SCOPES: tuple[Scope, ...] = get_args(Scope)

# The audit actions of access to another user's data; the dashboard's "who looked at my data" lists these.
VIEWED = "data.viewed"
ACTED_FOR = "data.acted_for"

GrantCheck = Callable[[str, str, Scope], Awaitable[bool]]
"""``allows(coach_id, user_id, scope)``: whether a live grant lets this coach read this scope of this user."""


def checked_user_id(value: str, param: str = "X-User-Id") -> str:
    """A user id a caller named: bounded like the columns that store it, and no NUL (PostgreSQL refuses it), so
    it fails here as a 400 rather than later in a background write."""
    if not 1 <= len(value) <= MAX_USER_ID or "\x00" in value:
        raise InvalidRequest(f"{param} must be 1-{MAX_USER_ID} characters without NUL", param=param)
    return value


@dataclass(frozen=True)
class Use:
    """One use of a user's data. ``roles`` may name any user for it; a coach may too with a live grant of
    ``scope``. ``reads``: the caller gets to see the data (audited as ``data.viewed``, else ``data.acted_for``)."""

    name: str
    reads: bool
    roles: frozenset[Role]
    scope: Scope | None = None


_APP = frozenset({Role.service, Role.admin})

ACT = Use("act", reads=False, roles=_APP)  # chats, journal writes, ratings, experiment events
JOURNAL = Use("journal", reads=True, roles=_APP, scope="journal")
INSIGHTS = Use("insights", reads=True, roles=_APP, scope="insights")
REQUESTS = Use("requests", reads=True, roles=_APP | {Role.auditor}, scope="requests")
PRIVACY_READ = Use("privacy", reads=True, roles=frozenset({Role.admin}))
PRIVACY_CHANGE = Use("privacy_change", reads=False, roles=frozenset({Role.admin}))

USES: tuple[Use, ...] = (ACT, JOURNAL, INSIGHTS, REQUESTS, PRIVACY_READ, PRIVACY_CHANGE)


def may_name(principal: Principal, use: Use) -> bool:
    """Whether the principal may name any user for this use without a grant."""
    return principal.via == "dev" or principal.role in use.roles


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


class Acting:
    """Resolves whose data a request is about (``subject``) and records access to someone else's."""

    def __init__(self, audit: AuditLog, allows: GrantCheck) -> None:
        self._audit = audit
        self._allows = allows

    async def subject(self, request: Request, use: Use, claimed: str | None = None, *, named: str | None = None) -> str:
        """The user this request acts on: the caller, or the user it names and may act for (else 403).

        A user is named by ``X-User-Id`` or ``named`` (a route's own parameter, e.g. ``?user=``); ``claimed`` is
        the OpenAI body's ``user``, an end-user tag there, which names the subject only for callers who may."""
        principal = principal_of(request)
        if principal is None:
            # Fail closed: a route that names users must sit behind authentication.
            raise RuntimeError("subject() needs an authenticated request (Depends(caller(...)))")
        named = self._named(request, principal, use, claimed, named)
        if named is None or named == principal.user_id:
            request.state.subject = principal.user_id  # whose data a stored Idempotency-Key answer holds
            return principal.user_id
        if not may_name(principal, use):
            if principal.role is not Role.coach or use.scope is None:
                raise Forbidden(
                    f"the {principal.role.value} role may not act for another user here (X-User-Id)", param="X-User-Id"
                )
            if not await self._allows(principal.user_id, named, use.scope):
                raise GrantRequired(
                    f"no live grant of the {use.scope!r} scope from this user to you (never given, expired or revoked)",
                    param="X-User-Id",
                )
        await self._record(request, principal, named, use)
        request.state.subject = named
        return named

    @staticmethod
    def _named(request: Request, principal: Principal, use: Use, claimed: str | None, named: str | None) -> str | None:
        header = (request.headers.get("x-user-id") or "").strip()
        if header:
            if named is not None and named != header:
                raise InvalidRequest("X-User-Id and the user parameter name different users", param="X-User-Id")
            return checked_user_id(header)
        if named is not None:
            return checked_user_id(named, "user")
        # The OpenAI body's ``user`` is an end-user tag there: it names the subject only for callers that may.
        if claimed and may_name(principal, use):
            return checked_user_id(claimed, "user")
        return None

    async def _record(self, request: Request, principal: Principal, subject: str, use: Use) -> None:
        details: dict[str, object] = {"use": use.name, "route": _route(request), "via": principal.via}
        if principal.key_id is not None:
            details["key_id"] = principal.key_id
        try:
            await self._audit.append(
                principal.user_id, principal.role.value, VIEWED if use.reads else ACTED_FOR, target=subject,
                details=details,
            )  # fmt: skip
        except Exception as exc:
            log.exception("could not record %s acting for another user; refused", principal.user_id)
            raise AccessNotRecorded("access to another user's data could not be recorded; try again") from exc
