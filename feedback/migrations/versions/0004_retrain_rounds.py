"""The loop: retrain_rounds, one row per round `rewardserve retrain` ran, with its result and report.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the rounds table."""
    op.create_table(
        "retrain_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("parent_version", sa.String(64), nullable=True),
        sa.Column("parent_path", sa.String(1024), nullable=True),
        sa.Column("candidate_path", sa.String(1024), nullable=True),
        sa.Column("parent_accuracy", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retrain_rounds"),
    )
    op.create_index("ix_retrain_rounds_model", "retrain_rounds", ["model"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_retrain_rounds_model", "retrain_rounds")
    op.drop_table("retrain_rounds")
