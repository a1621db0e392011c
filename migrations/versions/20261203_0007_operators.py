"""operators and sign-in failures for the console; indexes for its inbox and runs pages

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
# SQLite only autoincrements INTEGER PRIMARY KEY.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("username", name="uq_operators_username"),
    )
    op.create_table(
        "sign_in_failures",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_sign_in_failures_username", "sign_in_failures",
                    ["username", "created_at"])
    op.create_index("ix_sign_in_failures_remote_addr", "sign_in_failures",
                    ["remote_addr", "created_at"])
    # The inbox pages by (updated_at, id), newest first, across instances or within one.
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at", "id"])
    op.create_index("ix_conversations_instance_updated_at", "conversations",
                    ["instance", "updated_at", "id"])
    # The runs page: failed and retrying runs, newest first.
    op.create_index("ix_reply_runs_status_id", "reply_runs", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_reply_runs_status_id", table_name="reply_runs")
    op.drop_index("ix_conversations_instance_updated_at", table_name="conversations")
    op.drop_index("ix_conversations_updated_at", table_name="conversations")
    op.drop_index("ix_sign_in_failures_remote_addr", table_name="sign_in_failures")
    op.drop_index("ix_sign_in_failures_username", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_table("operators")
