"""Route dependencies: who is calling (authentication, role) and whether they may call now (rate limit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request

from upcoach.errors import RateLimited
from upcoach.security.auth import Principal, require
from upcoach.security.keys import Role


def caller(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Authenticate, check the role, then take one token from the caller's rate-limit bucket."""
    authenticated = require(*roles)

    async def dependency(request: Request, principal: Principal = Depends(authenticated)) -> Principal:  # noqa: B008
        limiter = request.app.state.services.limiter
        if limiter is not None and principal.via != "dev":
            verdict = await limiter.take(principal.key_id or f"user:{principal.user_id}")
            if not verdict.allowed:
                raise RateLimited("rate limit exceeded for this key; slow down", retry_after=verdict.retry_after)
        return principal

    return dependency


# Who may chat and keep a journal (as themselves; service also for its users, security/acting.py).
CHAT_ROLES = (Role.user, Role.coach, Role.service)
# Who may read usage and request records (their own, or a user's they may read; admins pass every check).
RECORD_READERS = (*CHAT_ROLES, Role.auditor)
