"""privacy settings history and per-user privacy state (#7)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _settings_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("processing_mode", sa.String(16), nullable=False),
        sa.Column("special_category_cloud_opt_in", sa.Boolean(), nullable=False),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("analytics_opt_in", sa.Boolean(), nullable=False),
        sa.Column("do_not_share", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "privacy_settings",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_settings_columns(),
        sa.PrimaryKeyConstraint("user_id", name="pk_privacy_settings"),
    )
    op.create_index("ix_privacy_settings_retention_days", "privacy_settings", ["retention_days"])
    op.create_table(
        "privacy_settings_history",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        *_settings_columns(),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "version", name="pk_privacy_settings_history"),
    )


def downgrade() -> None:
    op.drop_table("privacy_settings_history")
    op.drop_index("ix_privacy_settings_retention_days", table_name="privacy_settings")
    op.drop_table("privacy_settings")
