"""The strategies library in the database: publish the shipped content, full-text search, version manifests.

Search runs in the database on both backends: SQLite through an FTS5 table (BM25, title weighted 4x, Porter
stemming) and PostgreSQL through ``to_tsvector('english', search_text)`` under a GIN index (ts_rank, title
weighted A). Queries are reduced to plain word tokens OR-ed together, so any user text is a safe query and the
ranking, not the match, decides relevance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from upcoach.coaching.library import Strategy, library_version
from upcoach.storage.database import Database
from upcoach.storage.tables import FTS_TABLE, StrategyRow, StrategyTagRow, StrategyVersionRow, utc_now

MAX_QUERY_TOKENS = 24
_TOKEN = re.compile(r"[^\W_]+")
# Words that carry no topic: dropping them keeps an OR query from matching the whole library on "I" or "the".
_STOPWORDS = frozenset(
    "a about after again all am an and any are as at be been being but by can could did do does doing don dont for "
    "from get got had has have having he her here him his how i if im in into is it its ive just me more most my "
    "no not now of off on once only or other our out over so some such than that the their them then there these "
    "they this those to too up very was we were what when where which who why will with would you your yours".split()
)
_LOCK_KEY = 0x7570636F61636805  # any fixed number shared by every process publishing into this database


@dataclass(frozen=True)
class Published:
    version: str
    created_at: datetime
    manifest: dict[str, str]


@dataclass(frozen=True)
class Hit:
    strategy: Strategy
    score: float


def query_tokens(query: str) -> list[str]:
    tokens: list[str] = []
    for token in _TOKEN.findall(query.lower()):
        if len(token) > 1 and token not in _STOPWORDS and token not in tokens:
            tokens.append(token)
    return tokens[:MAX_QUERY_TOKENS]


def _to_strategy(row: StrategyRow) -> Strategy:
    return Strategy(
        id=row.id,
        locale=row.locale,
        category=row.category,
        title=row.title,
        summary=row.summary,
        steps=tuple(row.steps),
        tags=tuple(row.tags),
        chips=tuple(row.chips),
    )


class StrategyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.current: Published | None = None

    # ---- publishing ----------------------------------------------------------------------------------------------
    async def publish(self, strategies: Sequence[Strategy]) -> Published:
        """Make ``strategies`` the library in the database (upsert changed, delete removed) and record the version.

        Runs at every start; when the database already holds this content version it only reads. Concurrent
        starters serialize on a lock, so the second one finds the work done.
        """
        version = library_version(strategies)
        manifest = {s.id: s.content_hash for s in strategies}
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            row = (await conn.execute(select(StrategyVersionRow).where(StrategyVersionRow.version == version))).first()
            stored = {
                sid: digest for sid, digest in await conn.execute(select(StrategyRow.id, StrategyRow.content_hash))
            }
            now = utc_now()
            if stored != manifest:
                await self._apply(conn, strategies, stored, now)
            if row is None:
                await conn.execute(StrategyVersionRow.__table__.insert().values(version=version, created_at=now,
                                                                                 manifest=manifest))  # fmt: skip
                created = now
            elif stored != manifest:
                # Content went back to an earlier version: publish it again as the newest.
                await conn.execute(
                    update(StrategyVersionRow).where(StrategyVersionRow.version == version).values(created_at=now)
                )
                created = now
            else:
                created = row.created_at
        self.current = Published(version, created, manifest)
        return self.current

    async def _apply(
        self, conn: AsyncConnection, strategies: Sequence[Strategy], stored: dict[str, str], now: datetime
    ) -> None:
        wanted = {s.id for s in strategies}
        changed = [s for s in strategies if stored.get(s.id) != s.content_hash]
        removed = [sid for sid in stored if sid not in wanted]
        stale = [s.id for s in changed if s.id in stored] + removed
        if stale:
            await conn.execute(delete(StrategyTagRow).where(StrategyTagRow.strategy_id.in_(stale)))
            await conn.execute(delete(StrategyRow).where(StrategyRow.id.in_(stale)))
            if self._db.dialect == "sqlite":
                for sid in stale:
                    await conn.execute(text(f"DELETE FROM {FTS_TABLE} WHERE strategy_id = :id"), {"id": sid})
        if not changed:
            return
        await conn.execute(
            StrategyRow.__table__.insert(),
            [
                {**s.to_json(), "search_text": s.search_text, "content_hash": s.content_hash, "updated_at": now}
                for s in changed
            ],
        )
        tags = [{"strategy_id": s.id, "tag": tag} for s in changed for tag in dict.fromkeys(s.tags)]
        await conn.execute(StrategyTagRow.__table__.insert(), tags)
        if self._db.dialect == "sqlite":
            await conn.execute(
                text(f"INSERT INTO {FTS_TABLE} (strategy_id, title, search_text) VALUES (:id, :title, :body)"),
                [{"id": s.id, "title": s.title, "body": s.search_text} for s in changed],
            )

    async def manifest(self, version: str) -> Published | None:
        async with self._db.sessions() as session:
            row = await session.get(StrategyVersionRow, version)
            return None if row is None else Published(row.version, row.created_at, dict(row.manifest))

    # ---- reading -------------------------------------------------------------------------------------------------
    async def get_many(self, ids: Sequence[str] | None = None) -> list[Strategy]:
        """The named strategies (all when ``ids`` is None), ordered by id."""
        query = select(StrategyRow).order_by(StrategyRow.id)
        if ids is not None:
            query = query.where(StrategyRow.id.in_(list(ids)))
        async with self._db.sessions() as session:
            return [_to_strategy(row) for row in (await session.scalars(query)).all()]

    async def search(
        self, query: str | None = None, *, category: str | None = None, tag: str | None = None, limit: int = 10
    ) -> list[Hit]:
        """Strategies matching ``query`` (best first), optionally within a category and/or tag.

        Without a query, the filtered library in a stable order (category, id) with score 0. A query with no
        searchable words (only stopwords or punctuation) matches nothing.
        """
        tokens = query_tokens(query) if query else []
        if query and not tokens:
            return []
        params: dict[str, object] = {"limit": limit}
        filters = []
        if category:
            filters.append("s.category = :category")
            params["category"] = category
        if tag:
            filters.append("s.id IN (SELECT strategy_id FROM coaching_strategy_tags WHERE tag = :tag)")
            params["tag"] = tag.lower()
        if not tokens:
            where = f"WHERE {' AND '.join(filters)}" if filters else ""
            sql = f"SELECT s.id, 0.0 AS score FROM coaching_strategies s {where} ORDER BY s.category, s.id LIMIT :limit"
        elif self._db.dialect == "sqlite":
            params["match"] = " OR ".join(f'"{token}"' for token in tokens)
            where = " AND ".join([f"{FTS_TABLE} MATCH :match", *filters])
            # bm25() is lower for better matches; weights per column: strategy_id (unindexed), title, body.
            sql = (
                f"SELECT s.id, -bm25({FTS_TABLE}, 0.0, 4.0, 1.0) AS score FROM {FTS_TABLE} "
                f"JOIN coaching_strategies s ON s.id = {FTS_TABLE}.strategy_id WHERE {where} "
                "ORDER BY score DESC, s.id LIMIT :limit"
            )
        else:
            params["tsq"] = " | ".join(tokens)
            where = " AND ".join(["to_tsvector('english', s.search_text) @@ to_tsquery('english', :tsq)", *filters])
            sql = (
                "SELECT s.id, ts_rank(setweight(to_tsvector('english', s.title), 'A') || "
                "to_tsvector('english', s.search_text), to_tsquery('english', :tsq)) AS score "
                f"FROM coaching_strategies s WHERE {where} ORDER BY score DESC, s.id LIMIT :limit"
            )
        async with self._db.engine.connect() as conn:
            ranked = [(row[0], float(row[1])) for row in await conn.execute(text(sql), params)]
        by_id = {s.id: s for s in await self.get_many([sid for sid, _ in ranked])}
        return [Hit(by_id[sid], score) for sid, score in ranked if sid in by_id]

    async def categories(self) -> list[str]:
        async with self._db.sessions() as session:
            query = select(StrategyRow.category).distinct().order_by(StrategyRow.category)
            return list((await session.scalars(query)).all())
