"""Dashboard sign-in sessions and their CSRF tokens (the brake on guessing credentials: security/throttle.py).

Sessions live server-side, in this process: the cookie carries only a random 256-bit id, so nothing in it can be
forged or replayed after sign-out, and a restart signs everyone out (fail closed). ``upcoach serve`` runs one
process, so one store sees every request. A session ends at the first of: sign-out, ``ttl`` after sign-in, or
``idle`` without a request.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from upcoach.security.auth import Principal

# Bounds memory if someone signs in in a loop: the oldest sessions go first.
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    id: str
    principal: Principal
    csrf_token: str
    created_at: float
    last_seen: float


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison; a missing token on either side never matches."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


class SessionStore:
    """create / get / revoke. ``clock`` is injectable so expiry can be tested without waiting."""

    def __init__(self, *, ttl_seconds: float, idle_seconds: float, clock: Callable[[], float] = time.time) -> None:
        if ttl_seconds <= 0 or idle_seconds <= 0:
            raise ValueError("session lifetimes must be positive")
        self.ttl_seconds = ttl_seconds
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, principal: Principal) -> Session:
        now = self.clock()
        session = Session(new_token(), principal, new_token(), now, now)
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and mark it used), or None if unknown, expired or revoked."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.created_at >= self.ttl_seconds or now - session.last_seen >= self.idle_seconds:
            del self._sessions[session_id]
            return None
        session = replace(session, last_seen=now)
        self._sessions[session_id] = session
        return session

    def revoke(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)
