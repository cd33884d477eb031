"""The labeling queue: label_tasks and label_assignments.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the queue's two tables."""
    op.create_table(
        "label_tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("completions", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_label_tasks"),
    )
    op.create_index("ix_label_tasks_done_priority", "label_tasks", ["done", "priority"])
    op.create_table(
        "label_assignments",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("annotator", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "annotator", name="pk_label_assignments"),
    )


def downgrade() -> None:
    """Drop the queue (the judgements stay in feedback_events)."""
    op.drop_table("label_assignments")
    op.drop_table("label_tasks")
