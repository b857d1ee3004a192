"""Dashboard sign-in sessions and their CSRF tokens (the brake on guessing credentials: security/throttle.py).

Sessions live server-side: in Redis when it is configured (so every worker of ``upcoach serve --workers N`` sees
them), else in this process, where a restart signs everyone out (fail closed). The cookie carries only a random
256-bit id, so nothing in it can be forged or replayed after sign-out. A session ends at the first of: sign-out,
``ttl`` after sign-in, or ``idle`` without a request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from upcoach.errors import Unavailable
from upcoach.security.auth import Principal
from upcoach.security.keys import Role

log = logging.getLogger(__name__)

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
    """create / get / revoke. ``clock`` is injectable so expiry can be tested without waiting.

    With ``redis`` the sessions live there (every worker of ``serve --workers N`` sees the same ones), under the
    SHA-256 of their id, so whoever can read Redis still cannot present a cookie; each expires in Redis at the
    first of its two deadlines. A Redis error signs the browser out (fail closed) rather than letting it in."""

    def __init__(
        self, *, ttl_seconds: float, idle_seconds: float, clock: Callable[[], float] = time.time, redis: Any = None
    ) -> None:
        if ttl_seconds <= 0 or idle_seconds <= 0:
            raise ValueError("session lifetimes must be positive")
        self.ttl_seconds = ttl_seconds
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._redis = redis
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    async def create(self, principal: Principal) -> Session:
        now = self.clock()
        session = Session(new_token(), principal, new_token(), now, now)
        if self._redis is not None:
            try:
                await self._save(session, now)
            except Exception as exc:
                raise Unavailable("the session store is unreachable; try again shortly") from exc
            return session
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and mark it used), or None if unknown, expired or revoked."""
        if not session_id:
            return None
        session = await self._load(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.created_at >= self.ttl_seconds or now - session.last_seen >= self.idle_seconds:
            await self.revoke(session_id)
            return None
        session = replace(session, last_seen=now)
        if self._redis is not None:
            try:
                await self._save(session, now)
            except Exception:
                log.warning("session store: redis unavailable; signing the browser out", exc_info=True)
                return None
        else:
            self._sessions[session_id] = session
        return session

    async def revoke(self, session_id: str | None) -> None:
        if not session_id:
            return
        self._sessions.pop(session_id, None)
        if self._redis is not None:
            await self._redis.delete(_key(session_id))

    async def _load(self, session_id: str) -> Session | None:
        if self._redis is None:
            return self._sessions.get(session_id)
        try:
            raw = await self._redis.get(_key(session_id))
        except Exception:
            log.warning("session store: redis unavailable; signing the browser out", exc_info=True)
            return None
        if raw is None:
            return None
        data = json.loads(raw)
        principal = Principal(data["user_id"], Role(data["role"]), data["key_id"], data["via"], data["expires_at"])
        return Session(session_id, principal, data["csrf_token"], data["created_at"], data["last_seen"])

    async def _save(self, session: Session, now: float) -> None:
        principal = session.principal
        data = {
            "user_id": principal.user_id, "role": principal.role.value, "key_id": principal.key_id,
            "via": principal.via, "expires_at": principal.expires_at, "csrf_token": session.csrf_token,
            "created_at": session.created_at, "last_seen": session.last_seen,
        }  # fmt: skip
        remaining = min(session.created_at + self.ttl_seconds, now + self.idle_seconds) - now
        await self._redis.set(_key(session.id), json.dumps(data), px=max(1, int(remaining * 1000)))


def _key(session_id: str) -> str:
    return "upcoach:session:" + hashlib.sha256(session_id.encode()).hexdigest()
