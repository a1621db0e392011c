"""indexes for the console's inbox and transcripts: a config's and the paused conversations by
activity, each conversation's runs by id, a run's events, and trigram indexes for searching
names, numbers and message text on PostgreSQL

Revision ID: i001_inbox
Revises: g001_playground
Create Date: 2026-12-03 18:10:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i001_inbox"
down_revision: str | None = "g001_playground"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAUSED = "status = 'paused'"
WITH_RUN = "run_id IS NOT NULL"


def upgrade() -> None:
    # The inbox pages by (updated_at, id), newest first, within a config or among the paused.
    op.create_index("ix_conversations_config_updated_at", "conversations",
                    ["workflow_config_id", "updated_at", "id"])
    op.create_index("ix_conversations_paused", "conversations", ["updated_at", "id"],
                    postgresql_where=sa.text(PAUSED), sqlite_where=sa.text(PAUSED))
    # A conversation's latest run (the inbox's "last run failed"), without reading them all.
    op.create_index("ix_reply_runs_conversation_id", "reply_runs", ["conversation_id", "id"])
    # The transcript's runs' events.
    op.create_index("ix_events_run_id", "events", ["run_id", "id"],
                    postgresql_where=sa.text(WITH_RUN), sqlite_where=sa.text(WITH_RUN))
    if op.get_bind().dialect.name == "postgresql" and _trigrams():
        # Substring search (ILIKE '%…%') by trigrams. SQLite scans instead (its figures are in
        # docs/PERFORMANCE.md).
        op.create_index("ix_conversations_search", "conversations",
                        ["contact_name", "contact_phone", "chat_jid"], postgresql_using="gin",
                        postgresql_ops={"contact_name": "gin_trgm_ops",
                                        "contact_phone": "gin_trgm_ops",
                                        "chat_jid": "gin_trgm_ops"})
        op.create_index("ix_messages_search", "messages", ["content"], postgresql_using="gin",
                        postgresql_ops={"content": "gin_trgm_ops"})
        # A finer histogram of names: with the default (100 values) a name in 0.08 % of the
        # conversations was taken for 1 %, and the page walked 62,000 of them rather than
        # reading the 81 from the trigram index (264 ms against 10 ms).
        op.execute("ALTER TABLE conversations ALTER COLUMN contact_name SET STATISTICS 1000")


def _trigrams() -> bool:
    """pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
    Where it cannot be (no contrib package), the search works unindexed."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        logging.getLogger("alembic").warning(
            "pg_trgm cannot be created (%s): the inbox's search scans instead",
            type(exc.orig).__name__)
        return False
    return True


def downgrade() -> None:
    # pg_trgm stays: other objects may have come to use it since.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE conversations ALTER COLUMN contact_name SET STATISTICS -1")
    op.execute("DROP INDEX IF EXISTS ix_messages_search")
    op.execute("DROP INDEX IF EXISTS ix_conversations_search")
    op.drop_index("ix_events_run_id", table_name="events")
    op.drop_index("ix_reply_runs_conversation_id", table_name="reply_runs")
    op.drop_index("ix_conversations_paused", table_name="conversations")
    op.drop_index("ix_conversations_config_updated_at", table_name="conversations")
