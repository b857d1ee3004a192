"""idempotency_keys.user_id: whose data a stored answer holds, so an erasure purges it (#19 cleanup)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Answers stored before this revision name nobody: they expire within a day (api/idempotency.py RETENTION).
    op.add_column("idempotency_keys", sa.Column("user_id", sa.String(128), nullable=True))
    op.create_index("ix_idempotency_keys_user_id", "idempotency_keys", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_user_id", table_name="idempotency_keys")
    op.drop_column("idempotency_keys", "user_id")
