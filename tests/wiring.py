"""The hybrid engine exactly as create_app wires it (routing/factory.py: guard, redaction, canary, privacy lookup,
regions, audit), on a throwaway SQLite database: engine tests build it here, never by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.config import Settings
from upcoach.llm.base import Backend
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.observability.metrics import Metrics
from upcoach.privacy.settings import PrivacyService
from upcoach.routing.breaker import BreakerStore, MemoryBreakerStore
from upcoach.routing.engine import HybridEngine, Outcome, PrivacyLookup
from upcoach.routing.factory import build_hybrid_engine
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database


@dataclass
class Recorder:
    """Stands where create_app puts the request-record writer: keeps every outcome."""

    outcomes: list[Outcome] = field(default_factory=list)

    async def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@dataclass
class Wiring:
    tmp: Path
    db: Database
    audit: AuditLog
    strategies: StrategyRepository
    engines: list[HybridEngine] = field(default_factory=list)

    def settings(self, **overrides: object) -> Settings:
        return Settings(data_dir=self.tmp, load_model=False, redis_url=None, **overrides)  # type: ignore[arg-type]

    def engine(
        self,
        local: Sequence[Backend],
        *,
        store: BreakerStore | None = None,
        privacy: PrivacyLookup | None = None,
        redis: object | None = None,
        **settings: object,
    ) -> tuple[HybridEngine, Recorder]:
        """An engine with ``local`` as its local side, configured by ``settings`` (Settings field names)."""
        config = self.settings(**settings)
        recorder = Recorder()
        engine = build_hybrid_engine(
            config, local=local, metrics=Metrics(), record=recorder, audit=self.audit,
            privacy=privacy or PrivacyService(self.db, self.audit, config).get,
            breaker_store=store or MemoryBreakerStore(), redis=redis, strategies=self.strategies,
        )  # fmt: skip
        self.engines.append(engine)
        return engine, recorder

    async def audit_events(self, action: str) -> list[dict[str, object]]:
        return [event.to_json() for event in await self.audit.query(action=action, limit=1000)]


@asynccontextmanager
async def wiring(tmp: Path) -> AsyncIterator[Wiring]:
    settings = Settings(data_dir=tmp, load_model=False, redis_url=None)
    db = Database(settings.effective_database_url)
    await db.migrate()
    key = audit_key_from_settings(settings)
    assert key is not None
    strategies = StrategyRepository(db)
    await strategies.publish(load_builtin())  # the library answers are grounded in, as start_coach publishes it
    wired = Wiring(tmp, db, AuditLog(AuditRepository(db), key), strategies)
    try:
        yield wired
    finally:
        for engine in wired.engines:
            await engine.aclose()
        await db.dispose()
