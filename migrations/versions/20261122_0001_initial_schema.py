"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:45:59.618427
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
# SQLite only autoincrements INTEGER PRIMARY KEY.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table('workflow_configs',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('instance', sa.String(length=200), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=False),
    sa.Column('send', JSON, nullable=False),
    sa.Column('debounce_seconds', sa.Float(), nullable=False),
    sa.Column('options', JSON, nullable=False),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('updated_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_workflow_configs_instance'), 'workflow_configs', ['instance'], unique=False)
    op.create_table('conversations',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('instance', sa.String(length=200), nullable=False),
    sa.Column('chat_jid', sa.String(length=200), nullable=False),
    sa.Column('contact_phone', sa.String(length=64), nullable=True),
    sa.Column('contact_name', sa.String(length=200), nullable=True),
    sa.Column('workflow_config_id', ID, nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('paused_until', TIMESTAMP, nullable=True),
    sa.Column('pause_reason', sa.String(length=200), nullable=True),
    sa.Column('lease_token', sa.BigInteger(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', TIMESTAMP, nullable=True),
    sa.Column('last_inbound_at', TIMESTAMP, nullable=True),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('updated_at', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['workflow_config_id'], ['workflow_configs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instance', 'chat_jid', name='uq_conversations_chat')
    )
    op.create_table('reply_runs',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('conversation_id', ID, nullable=False),
    sa.Column('workflow_config_id', ID, nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('finished_at', TIMESTAMP, nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workflow_config_id'], ['workflow_configs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_reply_runs_conversation_status', 'reply_runs', ['conversation_id', 'status'], unique=False)
    op.create_table('events',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', ID, nullable=True),
    sa.Column('run_id', ID, nullable=True),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['reply_runs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_conversation_id', 'events', ['conversation_id', 'id'], unique=False)
    op.create_index('ix_events_type', 'events', ['type', 'id'], unique=False)
    op.create_table('messages',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('conversation_id', ID, nullable=False),
    sa.Column('instance', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('wa_message_id', sa.String(length=128), nullable=True),
    sa.Column('media_type', sa.String(length=40), nullable=True),
    sa.Column('reply_run_id', ID, nullable=True),
    sa.Column('status', sa.String(length=20), nullable=True),
    sa.Column('seq', sa.Integer(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=128), nullable=True),
    sa.Column('extra', JSON, nullable=False),
    sa.Column('sent_at', TIMESTAMP, nullable=True),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reply_run_id'], ['reply_runs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instance', 'wa_message_id', name='uq_messages_wa_id')
    )
    op.create_index('ix_messages_conversation_id', 'messages', ['conversation_id', 'id'], unique=False)
    op.create_index('ix_messages_reply_run_id', 'messages', ['reply_run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_reply_run_id', table_name='messages')
    op.drop_index('ix_messages_conversation_id', table_name='messages')
    op.drop_table('messages')
    op.drop_index('ix_events_type', table_name='events')
    op.drop_index('ix_events_conversation_id', table_name='events')
    op.drop_table('events')
    op.drop_index('ix_reply_runs_conversation_status', table_name='reply_runs')
    op.drop_table('reply_runs')
    op.drop_table('conversations')
    op.drop_index(op.f('ix_workflow_configs_instance'), table_name='workflow_configs')
    op.drop_table('workflow_configs')
