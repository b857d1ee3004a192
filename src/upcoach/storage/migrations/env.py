"""Alembic environment for upcoach.

``Database.migrate`` hands over its own connection in ``config.attributes["connection"]`` (Alembic's asyncio
cookbook), so migrations share its engine and transaction. Run through the alembic command API without a
connection, it opens a short-lived async engine from the ``sqlalchemy.url`` option instead; with ``sql=True``
(offline mode) it only prints the SQL, for review by whoever runs production databases.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from upcoach.storage.database import async_url
from upcoach.storage.tables import Base, include_name

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,  # full-text search objects are not models (tables.FTS_OBJECTS)
        # SQLite cannot ALTER most things: drafted revisions must use batch (copy and move) operations there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            include_name=include_name,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes and no sqlalchemy.url option")
    asyncio.run(run_with_own_engine(url))


main()
