"""strategies library with full-text search, answer feedback (#8)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Mirrors upcoach.storage.tables.FTS_TABLE / FTS_INDEX; a migration must not import code that may change later.
FTS_TABLE = "coaching_strategies_fts"
FTS_INDEX = "ix_coaching_strategies_fts"


def upgrade() -> None:
    op.create_table(
        "coaching_strategies",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("chips", sa.JSON(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_coaching_strategies"),
    )
    op.create_index("ix_coaching_strategies_category", "coaching_strategies", ["category"])
    op.create_table(
        "coaching_strategy_tags",
        sa.Column("strategy_id", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["coaching_strategies.id"],
            name="fk_coaching_strategy_tags_strategy_id_coaching_strategies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("strategy_id", "tag", name="pk_coaching_strategy_tags"),
    )
    op.create_index("ix_coaching_strategy_tags_tag", "coaching_strategy_tags", ["tag"])
    op.create_table(
        "coaching_strategy_versions",
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_coaching_strategy_versions"),
    )
    op.create_index("ix_coaching_strategy_versions_created_at", "coaching_strategy_versions", ["created_at"])
    if op.get_context().dialect.name == "sqlite":
        # A standalone FTS5 table (not external-content): the strategies repository writes both in one
        # transaction, and a standalone table cannot point at rows that no longer exist.
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            "strategy_id UNINDEXED, title, search_text, tokenize = 'porter unicode61')"
        )
    else:
        op.execute(f"CREATE INDEX {FTS_INDEX} ON coaching_strategies USING gin (to_tsvector('english', search_text))")


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    else:
        op.execute(f"DROP INDEX IF EXISTS {FTS_INDEX}")
    op.drop_index("ix_coaching_strategy_versions_created_at", table_name="coaching_strategy_versions")
    op.drop_table("coaching_strategy_versions")
    op.drop_index("ix_coaching_strategy_tags_tag", table_name="coaching_strategy_tags")
    op.drop_table("coaching_strategy_tags")
    op.drop_index("ix_coaching_strategies_category", table_name="coaching_strategies")
    op.drop_table("coaching_strategies")
