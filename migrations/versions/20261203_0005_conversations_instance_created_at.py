"""conversations: an index on (instance, created_at), for new_conversations_per_minute

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A customer message that opens a conversation counts the instance's conversations of the
    # last minute: a range on this index, whatever the size of the table.
    op.create_index("ix_conversations_instance_created_at", "conversations",
                    ["instance", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_instance_created_at", table_name="conversations")
