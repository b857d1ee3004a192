"""who may act for whom: coach grants; keys created as coach become service keys (#12)

Before this revision the ``coach`` role was what the coaching app's backend used to act for its users; that is
now the ``service`` role, and ``coach`` means a human coach who sees a client's data only under a grant. Existing
coach keys were used as service keys, so they become service keys; nothing else about them changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "coach_grants",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("coach_id", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_coach_grants"),
    )
    op.create_index("ix_coach_grants_user_id", "coach_grants", ["user_id"])
    op.create_index("ix_coach_grants_coach_id_user_id", "coach_grants", ["coach_id", "user_id"])
    op.execute("UPDATE api_keys SET role = 'service' WHERE role = 'coach'")


def downgrade() -> None:
    op.execute("UPDATE api_keys SET role = 'coach' WHERE role = 'service'")
    op.drop_index("ix_coach_grants_coach_id_user_id", table_name="coach_grants")
    op.drop_index("ix_coach_grants_user_id", table_name="coach_grants")
    op.drop_table("coach_grants")
