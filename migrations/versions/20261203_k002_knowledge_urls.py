"""knowledge documents read from a URL: where from, how often, when fetched and when next, the
last failure and the text's digest

Revision ID: k002_knowledge_urls
Revises: p001_pacing
Create Date: 2026-12-03 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "k002_knowledge_urls"
down_revision: str | None = "p001_pacing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)
COLUMNS = ("source_url", "refresh_hours", "fetched_at", "next_fetch_at", "fetch_error",
           "content_sha256")


def upgrade() -> None:
    op.add_column("knowledge_documents", sa.Column("source_url", sa.String(2000), nullable=True))
    op.add_column("knowledge_documents", sa.Column("refresh_hours", sa.Integer(), nullable=True))
    op.add_column("knowledge_documents", sa.Column("fetched_at", WHEN, nullable=True))
    op.add_column("knowledge_documents", sa.Column("next_fetch_at", WHEN, nullable=True))
    op.add_column("knowledge_documents", sa.Column("fetch_error", sa.String(300), nullable=True))
    op.add_column("knowledge_documents",
                  sa.Column("content_sha256", sa.String(64), nullable=True))
    # The refreshers' question, every minute in every worker: which documents are due.
    op.create_index("ix_knowledge_documents_next_fetch_at", "knowledge_documents",
                    ["next_fetch_at"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_documents_next_fetch_at", table_name="knowledge_documents")
    for column in reversed(COLUMNS):
        op.drop_column("knowledge_documents", column)
