"""reply_runs.next_attempt_at: durable retry backoff

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reply_runs") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    # The sweeper's question: which conversations have an open run or an unanswered message?
    op.create_index(
        "ix_messages_unanswered", "messages", ["conversation_id"],
        postgresql_where=sa.text("role = 'customer' AND reply_run_id IS NULL"),
        sqlite_where=sa.text("role = 'customer' AND reply_run_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unanswered", table_name="messages")
    with op.batch_alter_table("reply_runs") as batch:
        batch.drop_column("next_attempt_at")
