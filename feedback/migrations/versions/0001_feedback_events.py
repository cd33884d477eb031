"""The feedback_events table.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``feedback_events`` and its indexes."""
    op.create_table(
        "feedback_events",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("form", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("annotator", sa.String(256), nullable=True),
        sa.Column("policy", sa.String(256), nullable=True),
        sa.Column("reward_model", sa.String(256), nullable=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("item_key", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_events"),
    )
    for column in ("source", "annotator", "user_id", "item_key", "created_at"):
        op.create_index(f"ix_feedback_events_{column}", "feedback_events", [column])
    op.create_index("ix_feedback_events_form_created_at", "feedback_events", ["form", "created_at"])


def downgrade() -> None:
    """Drop the table (and its data)."""
    op.drop_table("feedback_events")
