"""erasure fences: when each user's data was last erased, so writes that started earlier are refused (#12)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_fences",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_erasure_fences"),
    )


def downgrade() -> None:
    op.drop_table("erasure_fences")
