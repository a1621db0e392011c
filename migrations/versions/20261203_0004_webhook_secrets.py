"""workflow_configs: a webhook secret per config and an optional per-instance HMAC key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:40:00
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_configs") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hmac_key", sa.String(200), nullable=True))
    # Every existing config gets its own secret: a deployment that upgrades has no config
    # whose webhook can be forged by guessing.
    configs = sa.table("workflow_configs", sa.column("id", sa.BigInteger()),
                       sa.column("webhook_secret", sa.String(64)))
    connection = op.get_bind()
    for (config_id,) in connection.execute(sa.select(configs.c.id)).all():
        connection.execute(configs.update().where(configs.c.id == config_id)
                           .values(webhook_secret=secrets.token_urlsafe(24)))
    with op.batch_alter_table("workflow_configs") as batch:
        batch.alter_column("webhook_secret", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("workflow_configs") as batch:
        batch.drop_column("hmac_key")
        batch.drop_column("webhook_secret")
