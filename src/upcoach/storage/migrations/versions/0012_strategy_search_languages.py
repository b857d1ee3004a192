"""strategies full-text search in every language: index the analyzer's terms, not English stems (#21)

The terms (stop words dropped, Snowball stems per language, accents folded) are made by coaching/textsearch.py,
so the database only tokenizes on spaces: FTS5 with plain ``unicode61`` and PostgreSQL's ``simple`` configuration
instead of Porter and ``english``. The published strategies are derived data (the app publishes the library at
every start), so they are dropped here and indexed again, in the new form, by the next start.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

# Mirrors upcoach.storage.tables.FTS_TABLE / FTS_INDEX; a migration must not import code that may change later.
FTS_TABLE = "coaching_strategies_fts"
FTS_INDEX = "ix_coaching_strategies_fts"


def _rebuild(tokenizer: str, config: str) -> None:
    op.execute("DELETE FROM coaching_strategy_tags")
    op.execute("DELETE FROM coaching_strategies")
    if op.get_context().dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            f"strategy_id UNINDEXED, title, search_text, tokenize = '{tokenizer}')"
        )
    else:
        op.execute(f"DROP INDEX IF EXISTS {FTS_INDEX}")
        op.execute(f"CREATE INDEX {FTS_INDEX} ON coaching_strategies USING gin (to_tsvector('{config}', search_text))")


def upgrade() -> None:
    # remove_diacritics 0: the analyzer already folded accents, and unicode61 must not touch Devanagari marks.
    _rebuild("unicode61 remove_diacritics 0", "simple")


def downgrade() -> None:
    _rebuild("porter unicode61", "english")
