"""daily_usage: LLM tokens and cost per config and day, for daily budgets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # One row per config and day, read by primary key before each new reply: the budget check
    # costs one index lookup, whatever the size of the events table.
    op.create_table(
        "daily_usage",
        sa.Column("workflow_config_id", ID, autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("exceeded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["workflow_config_id"], ["workflow_configs.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workflow_config_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("daily_usage")
