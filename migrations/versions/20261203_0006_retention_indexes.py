"""created_at indexes on messages, events and reply_runs, for the retention job

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The retention job (zapreply.actions.privacy) deletes the oldest rows in small batches: each batch
    # must find them by an index range, not by scanning the whole table under its locks.
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index("ix_reply_runs_created_at", "reply_runs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_reply_runs_created_at", table_name="reply_runs")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_messages_created_at", table_name="messages")
