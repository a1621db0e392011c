"""playground: turns an operator tries against a config in the console, kept apart from
customer conversations

Revision ID: g001_playground
Revises: c001_contacts
Create Date: 2026-12-03 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "g001_playground"
down_revision: str | None = "c001_contacts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "playground_turns",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("workflow_config_id", ID, nullable=False),
        sa.Column("chat", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("customer_text", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("overrides", JSON, nullable=False),
        sa.Column("replayed_conversation_id", ID, nullable=True),
        sa.Column("replayed_message_id", ID, nullable=True),
        sa.Column("old_answer", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("streamed", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("tool_calls", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("updated_at", NOW, nullable=False),
        sa.Column("finished_at", NOW, nullable=True),
        sa.ForeignKeyConstraint(["workflow_config_id"], ["workflow_configs.id"],
                                ondelete="CASCADE"),
        # A replayed customer's words go with the conversation when it is erased or expires.
        sa.ForeignKeyConstraint(["replayed_conversation_id"], ["conversations.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_playground_turns_config_chat", "playground_turns",
                    ["workflow_config_id", "chat", "id"])
    op.create_index("ix_playground_turns_replayed_conversation", "playground_turns",
                    ["replayed_conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_playground_turns_replayed_conversation", table_name="playground_turns")
    op.drop_index("ix_playground_turns_config_chat", table_name="playground_turns")
    op.drop_table("playground_turns")
