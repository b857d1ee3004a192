"""The database connection: SQLAlchemy 2 async over SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# SQLite: WAL lets readers and the one writer proceed together; a writer that finds the lock taken waits up to
# SQLITE_BUSY_MS instead of failing with "database is locked" (synchronous=NORMAL is durable in WAL mode).
SQLITE_BUSY_MS = 10_000
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", f"PRAGMA busy_timeout={SQLITE_BUSY_MS}", "PRAGMA synchronous=NORMAL")
# PostgreSQL: a session waiting for a lock gives up after LOCK_TIMEOUT (an error the caller handles or retries)
# rather than piling up connections behind it; a statement still running after five minutes (retention over a
# large table is the slowest legitimate one) is stopped instead of holding its locks forever.
POSTGRES_SETTINGS = {"lock_timeout": "10s", "statement_timeout": "5min"}

# Any fixed 64-bit number works: it only has to be the same in every process that migrates this database.
_MIGRATION_LOCK_KEY = 0x7570636F61636800


def async_url(url: str) -> str:
    """Map a plain ``sqlite:///`` or ``postgresql://`` URL to the async driver this service uses."""
    parsed = make_url(url)
    backend = parsed.drivername.split("+")[0]
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def alembic_config() -> Config:
    """Alembic configuration built in code: the migrations ship inside the package, no alembic.ini needed."""
    config = Config()
    # Config options go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    # Alembic's asyncio cookbook: env.py runs on this connection instead of opening an engine of its own.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, object] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args["server_settings"] = dict(POSTGRES_SETTINGS)
        self.engine: AsyncEngine = create_async_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (``alembic upgrade head``).

        Idempotent and safe at every start, also when several processes start at once: the whole upgrade runs
        in one transaction that first takes a database-wide lock, so the later processes wait and then find the
        schema already at head.
        """
        config = alembic_config()
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Another process may migrate for longer than the lock timeout: wait for it as long as it takes.
                await conn.execute(text("SET LOCAL lock_timeout = 0"))
                await conn.execute(text("SET LOCAL statement_timeout = 0"))
            # On SQLite the driver would also run DDL outside any transaction: the explicit one makes it atomic.
            await self.serialize(conn, _MIGRATION_LOCK_KEY)
            await conn.run_sync(_upgrade, config)

    async def serialize(self, conn: AsyncConnection, key: int) -> None:
        """Make the transaction just begun on ``conn`` the only one holding ``key`` (PostgreSQL: an advisory lock
        until it ends) or, on SQLite, the one writer of the whole file from its first statement on: the sqlite3
        driver begins only at the first write, so a read-then-write done by two processes at once (two workers
        starting) would otherwise both read the old state and then collide on the write."""
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        elif self.dialect == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")

    async def schema_revision(self) -> str | None:
        """The alembic revision the database is at (None before the first migration)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())

    async def dispose(self) -> None:
        await self.engine.dispose()


# Failures that say nothing about the row: the database is down, locked or busy. The rows stay and are retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, TimeoutError)
# PostgreSQL SQLSTATE classes of the same kind: connection (08), rollback (40: deadlock, serialization),
# resources (53), lock not available (55P03: lock_timeout), operator intervention (57: timeouts, shutdown).
TRANSIENT_SQLSTATES = ("08", "40", "53", "55P03", "57")
# asyncpg's "cannot switch to state ...; another operation is in progress": a pooled connection the outage broke
# mid-call, seen right after PostgreSQL restarts (named, so storage needs no asyncpg import).
TRANSIENT_DRIVER_ERRORS = ("InternalClientError",)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy's ``orig``, the driver's cause) is one of those."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; a bound instead of trusting it has no cycle
        if seen is None:
            break
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(seen, TRANSIENT_ERRORS) or type(seen).__name__ in TRANSIENT_DRIVER_ERRORS:
            return True
        if isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATES):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False
