"""contacts: one person's LID and phone JIDs per instance; a conversation's contact notes

Revision ID: c001_contacts
Revises: k001_knowledge
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c001_contacts"
down_revision: str | None = "k001_knowledge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per person and instance: each form belongs to one person, so two workers
    # recording the same pair at once insert it once (both constraints, ON CONFLICT DO NOTHING).
    op.create_table(
        "contact_addresses",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("lid_jid", sa.String(200), nullable=False),
        sa.Column("phone_jid", sa.String(200), nullable=False),
        sa.Column("created_at", NOW, nullable=False),
        sa.UniqueConstraint("instance", "lid_jid", name="uq_contact_addresses_lid"),
        sa.UniqueConstraint("instance", "phone_jid", name="uq_contact_addresses_phone"),
    )
    op.add_column("conversations", sa.Column("notes", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("conversations", "notes")
    op.drop_table("contact_addresses")
