"""API keys: ``uc_<key id>_<secret>``, shown once at creation, stored as a SHA-256 digest of the secret.

The secret is 32 random bytes (256 bits). Against that much entropy a fast digest is as strong as a slow password
hash: nobody can enumerate 2^256 candidates, and a leaked table reveals nothing usable. A slow hash would only
add latency to every request. Keys are looked up by their public id and the digests compared in constant time.

The lookup is a database read on every request (~3.5 ms on the full path, docs/hot-path.md). With Redis the key
records are cached per worker (``KEY_CACHE_SECONDS`` at most), and revocation stays instant everywhere: revoking
bumps a counter in Redis (storage/generation.py) that every verification reads before trusting its cache, and a
worker that cannot read it goes to the database.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from upcoach.errors import NotFound, Unauthorized, Unavailable
from upcoach.observability.audit import SYSTEM, AuditLog
from upcoach.storage.generation import Generation, GenerationCache
from upcoach.storage.keys import ApiKeyRecord, ApiKeyRepository
from upcoach.storage.tables import utc_now

KEY_PREFIX = "uc"
SECRET_BYTES = 32
TOUCH_INTERVAL_SECONDS = 60.0
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_ENTRIES = 50_000

# The id is hex, so the first "_" after it ends it; the URL-safe secret may itself contain "_" and "-".
_TOKEN = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43,128}})")


class Role(StrEnum):
    """Who a principal is. ``service``: the coaching app's own backend, acting for its users (it may name one);
    ``coach``: a human coach, who sees a client's data only while that client grants it (security/acting.py)."""

    user = "user"
    coach = "coach"
    service = "service"
    admin = "admin"
    auditor = "auditor"


@dataclass(frozen=True)
class ApiKey:
    """What may be shown about a key: everything but its secret and digest."""

    id: str
    user_id: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    token: str  # the full key: give it to its owner now, it cannot be recovered later


class Refused(Unauthorized):
    """Credentials were presented and refused. ``reason`` and the rest go to the audit trail, not to the client,
    which only learns that the credentials are invalid."""

    def __init__(
        self,
        reason: str,
        *,
        message: str = "invalid API key or token",
        key_id: str | None = None,
        user_id: str | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.key_id = key_id
        self.user_id = user_id
        self.role = role


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.fullmatch(token)
    return None if match is None else (match.group(1), match.group(2))


def looks_like_api_key(token: str) -> bool:
    return token.startswith(f"{KEY_PREFIX}_")


def _public(record: ApiKeyRecord) -> ApiKey:
    return ApiKey(
        id=record.id,
        user_id=record.user_id,
        role=Role(record.role),
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
    )


class ApiKeys:
    """Create, verify, list and revoke keys. Creation and revocation are written to the audit trail."""

    def __init__(
        self,
        repository: ApiKeyRepository,
        audit: AuditLog,
        *,
        touch_interval: float = TOUCH_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        redis: object | None = None,
    ) -> None:
        self._repository = repository
        self._audit = audit
        self._touch_interval = touch_interval
        self._monotonic = monotonic
        self._cache: GenerationCache[str, ApiKeyRecord] | None = (
            GenerationCache(Generation(redis, "api-keys"), ttl=KEY_CACHE_SECONDS, max_entries=KEY_CACHE_ENTRIES,
                            clock=monotonic)
            if redis is not None
            else None
        )  # fmt: skip
        # last_used_at is informational: one write per key per interval keeps verification a single read.
        self._touched: dict[str, float] = {}

    async def create(self, user_id: str, role: Role, *, actor: str = SYSTEM, actor_role: str = SYSTEM) -> IssuedKey:
        if not user_id or len(user_id) > 128:
            raise ValueError("user id must have 1 to 128 characters")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        record = ApiKeyRecord(
            id=key_id, user_id=user_id, role=Role(role).value, secret_hash=hash_secret(secret), created_at=utc_now()
        )
        await self._repository.add(record)
        await self._audit.append(
            actor, actor_role, "key.created", target=key_id, details={"user_id": user_id, "role": record.role}
        )
        return IssuedKey(_public(record), f"{KEY_PREFIX}_{key_id}_{secret}")

    async def verify(self, token: str) -> ApiKey:
        """The key behind ``token``; raises Refused if it is malformed, unknown, wrong or revoked."""
        parsed = parse_token(token)
        if parsed is None:
            raise Refused("malformed_key")
        key_id, secret = parsed
        record = await self._record(key_id)
        if record is None:
            raise Refused("unknown_key", key_id=key_id)
        if not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
            raise Refused("wrong_secret", key_id=key_id, user_id=record.user_id, role=record.role)
        if record.revoked_at is not None:
            raise Refused("revoked_key", key_id=key_id, user_id=record.user_id, role=record.role)
        await self._touch(key_id)
        return _public(record)

    async def active(self, key_id: str) -> bool:
        """Whether the key exists and is not revoked (for sessions opened with it)."""
        record = await self._record(key_id)
        return record is not None and record.revoked_at is None

    async def revoke(self, key_id: str, *, actor: str = SYSTEM, actor_role: str = SYSTEM) -> ApiKey:
        """Revoke a key (idempotent: revoking a revoked key changes and records nothing). NotFound if unknown."""
        if await self._repository.revoke(key_id, utc_now()):
            await self._audit.append(actor, actor_role, "key.revoked", target=key_id)
        record = await self._repository.get(key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}")
        self._touched.pop(key_id, None)
        if self._cache is not None:
            self._cache.drop(key_id)
            try:
                await self._cache.generation.bump()
            except Exception as exc:
                raise Unavailable(
                    f"key {key_id} is revoked in the database, but the workers could not be told (Redis "
                    f"unreachable): they may accept it for up to {KEY_CACHE_SECONDS:.0f} s; revoke again"
                ) from exc
        return _public(record)

    # Inside this class "list" names the method below, hence builtins.list in its signature.
    async def list(self) -> builtins.list[ApiKey]:
        return [_public(record) for record in await self._repository.list()]

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        if self._cache is None:
            return await self._repository.get(key_id)
        record, generation = await self._cache.get(key_id)
        if record is None:
            record = await self._repository.get(key_id)
            if record is not None:
                self._cache.put(key_id, record, generation)
        return record

    async def _touch(self, key_id: str) -> None:
        now = self._monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < self._touch_interval:
            return
        self._touched[key_id] = now
        await self._repository.touch(key_id, utc_now())
