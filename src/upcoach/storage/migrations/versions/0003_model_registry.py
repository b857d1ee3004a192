"""model registry: installed model versions, download jobs, version A/B (#6)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
