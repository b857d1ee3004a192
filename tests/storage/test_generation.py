"""Caches shared by several workers through the Redis change counter (storage/generation.py): API keys and privacy
settings, each with two instances on one database standing for two workers, against the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio

from tests.conftest import free_port
from tests.wiring import Wiring, wiring
from upcoach.privacy.settings import PrivacyService
from upcoach.security.keys import ApiKeys, Refused, Role
from upcoach.storage.keys import ApiKeyRepository

REDIS_URL = "redis://127.0.0.1:6379"


class CountingRepository(ApiKeyRepository):
    """The real repository, counting its key lookups: the cache's whole point is not making them."""

    reads = 0

    async def get(self, key_id: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super().get(key_id)


@pytest_asyncio.fixture
async def wired(tmp_path: Path) -> AsyncIterator[Wiring]:
    async with wiring(tmp_path) as wired:
        yield wired


@pytest_asyncio.fixture
async def shared() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def test_a_key_revoked_on_one_worker_is_refused_by_the_other_at_once(
    wired: Wiring, shared: redis.asyncio.Redis
) -> None:
    one = ApiKeys(ApiKeyRepository(wired.db), wired.audit, redis=shared)
    other_repository = CountingRepository(wired.db)
    other = ApiKeys(other_repository, wired.audit, redis=shared)
    issued = await one.create("alice", Role.user)

    assert (await other.verify(issued.token)).user_id == "alice"
    reads = other_repository.reads
    for _ in range(3):
        await other.verify(issued.token)
    assert other_repository.reads == reads  # served from the cache

    await one.revoke(issued.key.id)
    with pytest.raises(Refused) as refused:
        await other.verify(issued.token)
    assert refused.value.reason == "revoked_key"
    assert not await other.active(issued.key.id)


async def test_without_redis_every_verification_reads_the_database(wired: Wiring) -> None:
    unreachable = redis.asyncio.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    repository = CountingRepository(wired.db)
    keys = ApiKeys(repository, wired.audit, redis=unreachable)
    issued = await keys.create("bob", Role.user)
    for _ in range(3):
        await keys.verify(issued.token)
    # The counter cannot be read, so the cache is never trusted: a revocation elsewhere could not be seen.
    assert repository.reads == 3
    await ApiKeys(ApiKeyRepository(wired.db), wired.audit).revoke(issued.key.id)
    assert not await keys.active(issued.key.id)
    await unreachable.aclose()


async def test_privacy_saved_on_one_worker_applies_on_the_other_at_once(
    wired: Wiring, shared: redis.asyncio.Redis
) -> None:
    settings = wired.settings(privacy_cache_seconds=300)
    one = PrivacyService(wired.db, wired.audit, settings, shared)
    other = PrivacyService(wired.db, wired.audit, settings, shared)
    user = f"carol-{uuid.uuid4().hex}"
    assert (await other.get(user)).processing_mode == "hybrid"  # cached there for up to 300 s
    await one.update(user, {"processing_mode": "local_only"}, actor=user, actor_role="user")
    assert (await other.get(user)).cloud_refusal == "user setting: local_only"
