"""request_records: one row per routed request (metadata only, never message text).

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "request_records",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("privacy_level", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("processing_mode", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(128), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("fallback_used", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("first_token_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("cloud_cost_equivalent_usd", sa.Float(), nullable=False),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("redactions", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_request_records"),
    )
    op.create_index("ix_request_records_created_at", "request_records", ["created_at"])
    op.create_index("ix_request_records_user_id_created_at", "request_records", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_request_records_user_id_created_at", table_name="request_records")
    op.drop_index("ix_request_records_created_at", table_name="request_records")
    op.drop_table("request_records")
