"""RequestRepository against SQLite and PostgreSQL, with numbers checked against hand-computed expectations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRecord, RequestRepository, UsageSummary

pytestmark = pytest.mark.asyncio(loop_scope="session")

BASE = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def record(request_id: str, user_id: str | None, hours: int, **fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "endpoint": "hybrid",
        "privacy_level": "standard",
        "decision": "local",
        "processing_mode": "local",
        "backend": "llamacpp",
        "outcome": "ok",
        "latency_ms": 100.0,
        **fields,
    }
    return RequestRecord(id=request_id, user_id=user_id, created_at=BASE + timedelta(hours=hours), **values)  # type: ignore[arg-type]


# A known set of rows; the summary tests below are computed by hand from this table.
# id  user   mode    fallback outcome    cost    cloud-eq prompt completion  hour
# r1  alice  local   no       ok         0       0.002    100    50          0
# r2  alice  cloud   no       ok         0.003   0.003    200    100         1
# r3  alice  local   yes      ok         0       0.004    300    120         2
# r4  bob    hybrid  no       ok         0.001   0.005    400    200         3
# r5  bob    cloud   no       error      0       0        150    0           4
# r6  -      none    no       cancelled  0       0        0      0           5
# r7  bob    local   yes      error      0       0.001    50     10          6
# r8  carol  cloud   no       ok         0.02    0.01     500    300         7
ROWS = [
    record("r1", "alice", 0, cloud_cost_equivalent_usd=0.002, prompt_tokens=100, completion_tokens=50),
    record(
        "r2", "alice", 1, decision="cloud", processing_mode="cloud", backend="cloud:gpt-4o-mini",
        cost_usd=0.003, cloud_cost_equivalent_usd=0.003, prompt_tokens=200, completion_tokens=100,
    ),
    record(
        "r3", "alice", 2, decision="cloud", fallback_used=True, reasons=["cloud breaker open"],
        cloud_cost_equivalent_usd=0.004, prompt_tokens=300, completion_tokens=120,
    ),
    record(
        "r4", "bob", 3, decision="cloud", processing_mode="hybrid", cost_usd=0.001,
        cloud_cost_equivalent_usd=0.005, prompt_tokens=400, completion_tokens=200,
    ),
    record(
        "r5", "bob", 4, decision="cloud", processing_mode="cloud", outcome="error",
        error_code="backend_timeout", prompt_tokens=150,
    ),
    record("r6", None, 5, processing_mode="none", outcome="cancelled"),
    record(
        "r7", "bob", 6, decision="cloud", fallback_used=True, outcome="error", error_code="local_unavailable",
        cloud_cost_equivalent_usd=0.001, prompt_tokens=50, completion_tokens=10,
    ),
    record(
        "r8", "carol", 7, decision="cloud", processing_mode="cloud", backend="cloud:gpt-4o",
        cost_usd=0.02, cloud_cost_equivalent_usd=0.01, prompt_tokens=500, completion_tokens=300,
    ),
]  # fmt: skip


@pytest.fixture
async def repo(migrated_db: Database) -> RequestRepository:
    return RequestRepository(migrated_db)


@pytest.fixture
async def filled(repo: RequestRepository) -> RequestRepository:
    for row in ROWS:
        await repo.add(row)
    return repo


def ids(records: list[RequestRecord]) -> list[str]:
    return [r.id for r in records]


async def test_round_trip_keeps_every_field(repo: RequestRepository) -> None:
    original = RequestRecord(
        id="req-7f3a",
        user_id="user-42",
        created_at=datetime(2025, 6, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        endpoint="openai",
        privacy_level="sensitive",
        decision="cloud",
        processing_mode="local",
        backend="pool:http://10.0.0.5:8000",
        reasons=["complexity 0.82 > 0.50", "privacy: sensitive → local", "Zürich ✓"],
        fallback_used=True,
        outcome="error",
        error_code="backend_timeout",
        latency_ms=1234.5,
        first_token_ms=87.25,
        prompt_tokens=321,
        completion_tokens=54,
        cost_usd=0.000123,
        cloud_cost_equivalent_usd=0.000456,
        region="eu-central",
        redactions={"email": 2, "phone": 1},
    )
    await repo.add(original)
    loaded = await repo.get("req-7f3a")
    assert loaded == original
    assert loaded is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at == datetime(2025, 6, 1, 4, 0, 15, 123456, tzinfo=UTC)
    assert loaded.reasons == ["complexity 0.82 > 0.50", "privacy: sensitive → local", "Zürich ✓"]
    assert loaded.redactions == {"email": 2, "phone": 1}


async def test_defaults_and_sql_null(repo: RequestRepository, migrated_db: Database) -> None:
    before = datetime.now(UTC)
    await repo.add(
        RequestRecord(
            id="min", endpoint="hybrid", privacy_level="standard", decision="local", processing_mode="local",
            backend="llamacpp", outcome="ok", latency_ms=5.0,
        )
    )  # fmt: skip
    loaded = await repo.get("min")
    assert loaded is not None
    assert before - timedelta(seconds=1) <= loaded.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert (loaded.user_id, loaded.redactions, loaded.reasons, loaded.fallback_used) == (None, None, [], False)
    async with migrated_db.engine.connect() as conn:
        # "No redaction data" must be SQL NULL, not the JSON literal null.
        nulls = await conn.scalar(text("SELECT count(*) FROM request_records WHERE redactions IS NULL"))
    assert nulls == 1


async def test_get_unknown_id_is_none(filled: RequestRepository) -> None:
    assert await filled.get("nope") is None


async def test_naive_datetimes_are_refused(repo: RequestRepository) -> None:
    naive = datetime(2025, 1, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await repo.add(replace(record("n", "alice", 0), created_at=naive))
    with pytest.raises(ValueError, match="timezone-aware"):
        await repo.list(since=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        await repo.summary(since=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        await repo.delete_older_than(naive)
    assert await repo.get("n") is None


async def test_list_is_newest_first(filled: RequestRepository) -> None:
    assert ids(await filled.list()) == ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    assert ids(await filled.list(limit=2)) == ["r8", "r7"]
    with pytest.raises(ValueError, match="limit"):
        await filled.list(limit=0)


async def test_list_filters_by_user_and_since(filled: RequestRepository) -> None:
    assert ids(await filled.list(user_id="alice")) == ["r3", "r2", "r1"]
    assert ids(await filled.list(user_id="nobody")) == []
    # since is inclusive: r6 was created exactly at BASE + 5h.
    assert ids(await filled.list(since=BASE + timedelta(hours=5))) == ["r8", "r7", "r6"]
    # The same instant written in another zone selects the same rows.
    berlin_summer = timezone(timedelta(hours=2))
    assert ids(await filled.list(since=(BASE + timedelta(hours=5)).astimezone(berlin_summer))) == ["r8", "r7", "r6"]
    assert ids(await filled.list(user_id="bob", since=BASE + timedelta(hours=4))) == ["r7", "r5"]
    assert ids(await filled.list(user_id="bob", since=BASE + timedelta(hours=4), limit=1)) == ["r7"]


async def test_summary_over_everything(filled: RequestRepository) -> None:
    summary = await filled.summary()
    assert summary.total == 8
    assert summary.by_mode == {"local": 3, "cloud": 3, "hybrid": 1, "none": 1}
    assert summary.local_share == pytest.approx(3 / 8)
    assert summary.fallbacks == 2
    assert summary.errors == 2
    assert summary.cost_incurred_usd == pytest.approx(0.024)
    assert summary.cloud_equivalent_usd == pytest.approx(0.025)
    assert summary.cost_avoided_usd == pytest.approx(0.001)
    assert (summary.prompt_tokens, summary.completion_tokens) == (1700, 780)


async def test_summary_for_one_user(filled: RequestRepository) -> None:
    summary = await filled.summary(user_id="alice")
    assert summary.total == 3
    assert summary.by_mode == {"local": 2, "cloud": 1, "hybrid": 0, "none": 0}
    assert summary.local_share == pytest.approx(2 / 3)
    assert (summary.fallbacks, summary.errors) == (1, 0)
    assert summary.cost_incurred_usd == pytest.approx(0.003)
    assert summary.cloud_equivalent_usd == pytest.approx(0.009)
    assert summary.cost_avoided_usd == pytest.approx(0.006)
    assert (summary.prompt_tokens, summary.completion_tokens) == (600, 270)


async def test_summary_for_user_since(filled: RequestRepository) -> None:
    summary = await filled.summary(user_id="bob", since=BASE + timedelta(hours=4))
    assert summary.total == 2
    assert summary.by_mode == {"local": 1, "cloud": 1, "hybrid": 0, "none": 0}
    assert summary.local_share == pytest.approx(0.5)
    assert (summary.fallbacks, summary.errors) == (1, 2)
    assert summary.cost_incurred_usd == pytest.approx(0.0)
    assert summary.cost_avoided_usd == pytest.approx(0.001)
    assert (summary.prompt_tokens, summary.completion_tokens) == (200, 10)


async def test_cost_avoided_is_never_negative(filled: RequestRepository) -> None:
    # carol's only request went to a model pricier than the reference cloud price.
    summary = await filled.summary(user_id="carol")
    assert summary.cost_incurred_usd == pytest.approx(0.02)
    assert summary.cloud_equivalent_usd == pytest.approx(0.01)
    assert summary.cost_avoided_usd == 0.0
    assert summary.local_share == 0.0


async def test_summary_of_nothing_is_zero(filled: RequestRepository) -> None:
    assert await filled.summary(user_id="nobody") == UsageSummary(
        total=0,
        by_mode={"local": 0, "cloud": 0, "hybrid": 0, "none": 0},
        local_share=0.0,
        fallbacks=0,
        errors=0,
        cost_incurred_usd=0.0,
        cloud_equivalent_usd=0.0,
        cost_avoided_usd=0.0,
        prompt_tokens=0,
        completion_tokens=0,
    )


async def test_delete_for_user_removes_only_that_user(filled: RequestRepository) -> None:
    assert await filled.delete_for_user("alice") == 3
    assert ids(await filled.list()) == ["r8", "r7", "r6", "r5", "r4"]
    assert await filled.get("r1") is None
    assert await filled.delete_for_user("alice") == 0
    assert (await filled.summary()).total == 5


async def test_delete_older_than(filled: RequestRepository) -> None:
    # Strictly older: r4, created exactly at the cutoff, stays.
    assert await filled.delete_older_than(BASE + timedelta(hours=3)) == 3
    assert ids(await filled.list()) == ["r8", "r7", "r6", "r5", "r4"]
    assert await filled.delete_older_than(BASE + timedelta(hours=3)) == 0
    assert await filled.delete_older_than(BASE + timedelta(days=1)) == 5
    assert await filled.list() == []
