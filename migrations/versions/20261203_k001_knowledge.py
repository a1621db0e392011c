"""knowledge base: documents, their passages indexed for search, and FAQ entries

Revision ID: k001_knowledge
Revises: 0007
Create Date: 2026-12-03 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "k001_knowledge"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.DateTime(timezone=True)

# SQLite's full-text index over the passages: an external-content FTS5 table (the text stays
# in knowledge_passages only) kept in step by triggers, which also fire on the cascades that
# delete a document's or a config's passages. remove_diacritics: "promoção" finds "promocao".
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE knowledge_passages_fts USING fts5("
    "content, content='knowledge_passages', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER knowledge_passages_fts_insert AFTER INSERT ON knowledge_passages BEGIN "
    "INSERT INTO knowledge_passages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER knowledge_passages_fts_delete AFTER DELETE ON knowledge_passages BEGIN "
    "INSERT INTO knowledge_passages_fts(knowledge_passages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER knowledge_passages_fts_update AFTER UPDATE OF content ON knowledge_passages "
    "BEGIN INSERT INTO knowledge_passages_fts(knowledge_passages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO knowledge_passages_fts(rowid, content) VALUES (new.id, new.content); END",
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "knowledge_documents",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("workflow_config_id", ID, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("updated_at", NOW, nullable=False),
        sa.ForeignKeyConstraint(["workflow_config_id"], ["workflow_configs.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_knowledge_documents_config", "knowledge_documents",
                    ["workflow_config_id", "id"])
    op.create_table(
        "knowledge_passages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("document_id", ID, nullable=False),
        sa.Column("workflow_config_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("language", sa.String(40), nullable=False),
        sa.Column("search_vector", sa.Text() if sqlite else postgresql.TSVECTOR(),
                  nullable=True),
        # float32 bytes on SQLite; real[] on PostgreSQL, which pgvector casts to `vector`.
        sa.Column("embedding", sa.LargeBinary() if sqlite else postgresql.ARRAY(sa.REAL()),
                  nullable=True),
        sa.Column("embedding_model", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(["document_id"], ["knowledge_documents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workflow_config_id"], ["workflow_configs.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_knowledge_passages_config", "knowledge_passages",
                    ["workflow_config_id", "id"])
    op.create_index("ix_knowledge_passages_document", "knowledge_passages",
                    ["document_id", "position"])
    if sqlite:
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.create_index("ix_knowledge_passages_search", "knowledge_passages", ["search_vector"],
                        postgresql_using="gin")
    op.create_table(
        "knowledge_faq",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("workflow_config_id", ID, nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("updated_at", NOW, nullable=False),
        sa.ForeignKeyConstraint(["workflow_config_id"], ["workflow_configs.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_knowledge_faq_config", "knowledge_faq", ["workflow_config_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_faq_config", table_name="knowledge_faq")
    op.drop_table("knowledge_faq")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER knowledge_passages_fts_{trigger}")
        op.execute("DROP TABLE knowledge_passages_fts")
    else:
        op.drop_index("ix_knowledge_passages_search", table_name="knowledge_passages")
    op.drop_index("ix_knowledge_passages_document", table_name="knowledge_passages")
    op.drop_index("ix_knowledge_passages_config", table_name="knowledge_passages")
    op.drop_table("knowledge_passages")
    op.drop_index("ix_knowledge_documents_config", table_name="knowledge_documents")
    op.drop_table("knowledge_documents")
