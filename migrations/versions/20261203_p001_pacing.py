"""send pacing: each instance's next free send slot and its count of new conversations today

Revision ID: p001_pacing
Revises: i001_inbox
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p001_pacing"
down_revision: str | None = "i001_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_pacing",
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("next_send_at", sa.Float(), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("new_conversations", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("instance"),
    )


def downgrade() -> None:
    op.drop_table("send_pacing")
