"""The storage connection against both embedded SQLite and the real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from upcoach.storage.database import Database, async_url


def test_async_url_picks_the_async_driver() -> None:
    assert async_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert async_url("postgresql://u@127.0.0.1:5432/test") == "postgresql+asyncpg://u@127.0.0.1:5432/test"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://127.0.0.1/test")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_ping_reaches_the_database(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}" if kind == "sqlite" else "postgresql://postgres@127.0.0.1:5432/test"
    db = Database(url)
    try:
        await db.ping()
        assert db.dialect == kind
    finally:
        await db.dispose()


async def test_ping_fails_for_an_unreachable_database() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(OSError):
            await db.ping()
    finally:
        await db.dispose()
