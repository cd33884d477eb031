"""Personal rewards: user_profiles, each user's weights on a bundle's basis heads.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the profiles table."""
    op.create_table(
        "user_profiles",
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("basis", sa.String(64), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("judgements", sa.Integer(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "basis", name="pk_user_profiles"),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("user_profiles")
