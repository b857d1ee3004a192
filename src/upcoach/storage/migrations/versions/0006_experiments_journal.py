"""A/B experiments, events, encrypted voice journal (#8)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_experiments"),
    )
    op.create_table(
        "experiment_exposures",
        sa.Column("experiment_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("experiment_key", "user_id", name="pk_experiment_exposures"),
    )
    op.create_index("ix_experiment_exposures_user_id", "experiment_exposures", ["user_id"])
    op.create_table(
        "experiment_events",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("experiment_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiment_events"),
    )
    op.create_index("ix_experiment_events_user_id", "experiment_events", ["user_id"])
    op.create_index("ix_experiment_events_experiment_key_metric", "experiment_events", ["experiment_key", "metric"])
    op.create_table(
        "user_data_keys",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_data_keys"),
    )
    op.create_table(
        "journal_entries",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("insight_status", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journal_entries"),
    )
    op.create_index("ix_journal_entries_user_id_recorded_at", "journal_entries", ["user_id", "recorded_at"])
    op.create_table(
        "answer_feedback",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_answer_feedback"),
    )
    op.create_index("ix_answer_feedback_user_id", "answer_feedback", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_answer_feedback_user_id", table_name="answer_feedback")
    op.drop_table("answer_feedback")
    op.drop_index("ix_journal_entries_user_id_recorded_at", table_name="journal_entries")
    op.drop_table("journal_entries")
    op.drop_table("user_data_keys")
    op.drop_index("ix_experiment_events_experiment_key_metric", table_name="experiment_events")
    op.drop_index("ix_experiment_events_user_id", table_name="experiment_events")
    op.drop_table("experiment_events")
    op.drop_index("ix_experiment_exposures_user_id", table_name="experiment_exposures")
    op.drop_table("experiment_exposures")
    op.drop_table("experiments")
