"""The strategies library in the database: publish the shipped content, full-text search, version manifests.

Search runs in the database on both backends, over the terms coaching/textsearch.py makes of each strategy in
its own language (stop words dropped, Snowball stems, accents folded; character pairs for Japanese): SQLite through
an FTS5 table (BM25, title weighted 4x, ``unicode61`` tokenizer) and PostgreSQL through
``to_tsvector('simple', search_text)`` under a GIN index (ts_rank, title weighted A). A search reads the query in
one language and looks only at that language's strategies. Queries are reduced to the same terms OR-ed together,
so any user text is a safe query and the ranking, not the match, decides relevance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from upcoach.coaching.library import Strategy, library_version
from upcoach.coaching.textsearch import analyze, analyzers, base_language
from upcoach.storage.database import Database
from upcoach.storage.tables import FTS_TABLE, StrategyRow, StrategyTagRow, StrategyVersionRow, utc_now

MAX_QUERY_TOKENS = 24
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


def query_tokens(query: str, language: str = "en") -> list[str]:
    """The topic words of ``query`` as written (no stems): stop words of the language dropped, each word once."""
    analyzer = analyzers()[base_language(language)]
    words = [word for word in analyzer.words(query) if word not in analyzer.stopwords]
    return list(dict.fromkeys(words))[:MAX_QUERY_TOKENS]


def query_terms(query: str, language: str) -> list[str]:
    """What a search looks up: the query's terms in ``language``, each once, at most MAX_QUERY_TOKENS."""
    return list(dict.fromkeys(analyze(query, language)))[:MAX_QUERY_TOKENS]


@lru_cache(maxsize=4096)
def indexed_text(strategy: Strategy) -> str:
    """The strategy as the full-text index sees it: the title's terms on the first line, everything on the second
    (PostgreSQL weights the first line as the title; SQLite gets the title as its own column)."""
    return f"{indexed_title(strategy)}\n{' '.join(analyze(strategy.search_text, strategy.locale))}"


@lru_cache(maxsize=4096)
def indexed_title(strategy: Strategy) -> str:
    return " ".join(analyze(strategy.title, strategy.locale))


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
            await self._db.serialize(conn, _LOCK_KEY)
            row = (await conn.execute(select(StrategyVersionRow).where(StrategyVersionRow.version == version))).first()
            indexed = {
                sid: (digest, text)
                for sid, digest, text in await conn.execute(
                    select(StrategyRow.id, StrategyRow.content_hash, StrategyRow.search_text)
                )
            }
            stored = {sid: digest for sid, (digest, _) in indexed.items()}
            # Same content indexed by an earlier analyzer (stop words or stemming changed): index it again.
            reindex = {s.id for s in strategies if s.id in indexed and indexed[s.id][1] != indexed_text(s)}
            now = utc_now()
            if stored != manifest or reindex:
                await self._apply(conn, strategies, stored, now, reindex)
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
        self,
        conn: AsyncConnection,
        strategies: Sequence[Strategy],
        stored: dict[str, str],
        now: datetime,
        reindex: set[str],
    ) -> None:
        wanted = {s.id for s in strategies}
        changed = [s for s in strategies if stored.get(s.id) != s.content_hash or s.id in reindex]
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
                {**s.to_json(), "search_text": indexed_text(s), "content_hash": s.content_hash, "updated_at": now}
                for s in changed
            ],
        )
        tags = [{"strategy_id": s.id, "tag": tag} for s in changed for tag in dict.fromkeys(s.tags)]
        await conn.execute(StrategyTagRow.__table__.insert(), tags)
        if self._db.dialect == "sqlite":
            await conn.execute(
                text(f"INSERT INTO {FTS_TABLE} (strategy_id, title, search_text) VALUES (:id, :title, :body)"),
                [{"id": s.id, "title": indexed_title(s), "body": indexed_text(s)} for s in changed],
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
        self,
        query: str | None = None,
        *,
        category: str | None = None,
        tag: str | None = None,
        limit: int = 10,
        language: str | None = "en",
    ) -> list[Hit]:
        """Strategies in ``language`` matching ``query`` (best first), optionally within a category and/or tag.

        ``language`` (a language or locale: "de", "pt-BR") reads the query and picks the strategies searched; None
        searches every language's strategies (for listings; a query is then read as English). Without a query, the
        filtered library in a stable order (category, id) with score 0. A query with no searchable words (only
        stopwords or punctuation) matches nothing.
        """
        terms = query_terms(query, language or "en") if query else []
        if query and not terms:
            return []
        params: dict[str, object] = {"limit": limit}
        filters = []
        if language is not None:
            filters.append("s.locale = :locale")
            params["locale"] = base_language(language)
        if category:
            filters.append("s.category = :category")
            params["category"] = category
        if tag:
            filters.append("s.id IN (SELECT strategy_id FROM coaching_strategy_tags WHERE tag = :tag)")
            params["tag"] = tag.lower()
        if not terms:
            where = f"WHERE {' AND '.join(filters)}" if filters else ""
            sql = f"SELECT s.id, 0.0 AS score FROM coaching_strategies s {where} ORDER BY s.category, s.id LIMIT :limit"
        elif self._db.dialect == "sqlite":
            params["match"] = " OR ".join(f'"{term}"' for term in terms)
            where = " AND ".join([f"{FTS_TABLE} MATCH :match", *filters])
            # bm25() is lower for better matches; weights per column: strategy_id (unindexed), title, body.
            sql = (
                f"SELECT s.id, -bm25({FTS_TABLE}, 0.0, 4.0, 1.0) AS score FROM {FTS_TABLE} "
                f"JOIN coaching_strategies s ON s.id = {FTS_TABLE}.strategy_id WHERE {where} "
                "ORDER BY score DESC, s.id LIMIT :limit"
            )
        else:
            # Quoted lexemes: a term is matched as is, never parsed as tsquery syntax.
            params["tsq"] = " | ".join(f"'{term}'" for term in terms)
            where = " AND ".join(["to_tsvector('simple', s.search_text) @@ to_tsquery('simple', :tsq)", *filters])
            sql = (
                "SELECT s.id, ts_rank(setweight(to_tsvector('simple', split_part(s.search_text, E'\\n', 1)), 'A') || "
                "to_tsvector('simple', s.search_text), to_tsquery('simple', :tsq)) AS score "
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
