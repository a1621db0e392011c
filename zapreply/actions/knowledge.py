"""A config's knowledge base: documents (add, replace, delete, list, get) and curated FAQ
entries. Documents arrive already read (zapreply.actions.documents) and are split into
passages and indexed here, in the same transaction: a refused document leaves nothing.
Embeddings, when the config names an embedding model, are made later by the worker (the
receiver, where the admin API runs, never loads litellm): zapreply.replies.knowledge.

A document may instead come from a URL: it is stored pending (no text, nothing to search) and
due at once, and a worker's refresher fetches it (zapreply.actions.knowledge_urls): the receiver
makes no slow outbound calls. Replacing a URL document by an upload or text makes it a plain
document (never fetched again); replacing it by a URL makes it due again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zapreply.actions import documents
from zapreply.actions.configs import get_config
from zapreply.actions.errors import Invalid, NotFound
from zapreply.rules.configs import options_of
from zapreply.storage import knowledge as store
from zapreply.storage.models import KnowledgeDocument, KnowledgeFaq, utcnow

MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 4000
# FAQ entries are matched in the worker one by one: a curated list, not a corpus.
MAX_FAQ_ENTRIES = 500


def add_document(session: Session, config_id: int,
                 document: documents.Document | documents.Source) -> KnowledgeDocument:
    config = get_config(session, config_id)
    row = KnowledgeDocument(workflow_config_id=config.id)
    if isinstance(document, documents.Source):
        _from_url(session, row, document)
    else:
        write_text(session, row, document, options_of(config).knowledge_language or "portuguese")
    return row


def replace_document(session: Session, config_id: int, document_id: int,
                     document: documents.Document | documents.Source) -> KnowledgeDocument:
    config = get_config(session, config_id)
    row = get_document(session, config_id, document_id)
    if isinstance(document, documents.Source):
        _from_url(session, row, document)
    else:
        # Its text from now on is this one: no longer fetched.
        row.source_url = row.refresh_hours = row.fetched_at = row.next_fetch_at = None
        row.fetch_error = None
        write_text(session, row, document, options_of(config).knowledge_language or "portuguese")
    return row


def _from_url(session: Session, row: KnowledgeDocument, source: documents.Source) -> None:
    """`row` to be read from `source.url`, due now. A new row has no text until then; a
    replaced one keeps its text (still searchable) until the new URL's is read."""
    row.title, row.source_url, row.refresh_hours = source.title, source.url, source.refresh_hours
    row.next_fetch_at, row.fetch_error, row.fetched_at = utcnow(), None, None
    row.content_sha256 = None
    if row.id is None:
        row.kind, row.content, row.filename = "url", "", None
    session.add(row)
    session.flush()


def write_text(session: Session, row: KnowledgeDocument, document: documents.Document,
           language: str) -> None:
    row.title, row.kind, row.content = document.title, document.kind, document.text
    row.filename = document.filename
    row.content_sha256 = documents.digest(document.text)
    session.add(row)
    session.flush()
    store.add_passages(session, row, documents.split_passages(document.text), language)


def refresh_document(session: Session, config_id: int, document_id: int) -> KnowledgeDocument:
    """A URL document due now: a worker's refresher fetches it within its interval."""
    row = get_document(session, config_id, document_id)
    if row.source_url is None:
        raise Invalid(f"document {document_id} was not added from a URL: nothing to fetch")
    row.next_fetch_at = utcnow()
    session.flush()
    return row


def delete_document(session: Session, config_id: int, document_id: int) -> None:
    session.delete(get_document(session, config_id, document_id))
    session.flush()


def get_document(session: Session, config_id: int, document_id: int) -> KnowledgeDocument:
    row = session.get(KnowledgeDocument, document_id)
    if row is None or row.workflow_config_id != config_id:
        get_config(session, config_id)
        raise NotFound(f"document {document_id} not found in workflow config {config_id}")
    return row


def list_documents(session: Session, config_id: int) -> list[dict[str, Any]]:
    get_config(session, config_id)
    rows = list(session.scalars(
        select(KnowledgeDocument).where(KnowledgeDocument.workflow_config_id == config_id)
        .order_by(KnowledgeDocument.id)))
    counts = store.passage_counts(session, [row.id for row in rows])
    return [document_view(row, counts.get(row.id, 0)) for row in rows]


def document_view(row: KnowledgeDocument, passages: int | None = None,
                  *, content: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id, "workflow_config_id": row.workflow_config_id, "title": row.title,
        "kind": row.kind, "filename": row.filename, "chars": len(row.content),
        "passages": passages, "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        "source_url": row.source_url, "refresh_hours": row.refresh_hours,
        "fetched_at": _iso(row.fetched_at), "next_fetch_at": _iso(row.next_fetch_at),
        "fetch_error": row.fetch_error,
    }
    if content:
        view["content"] = row.content
    return view


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def shown(session: Session, row: KnowledgeDocument, *, content: bool = False) -> dict[str, Any]:
    """A document's view with its passage count."""
    session.flush()
    return document_view(row, store.passage_counts(session, [row.id]).get(row.id, 0),
                         content=content)


def reindex(session: Session, config_id: int) -> int:
    """After a config's knowledge_language changed: its passages indexed in the new one."""
    config = get_config(session, config_id)
    return store.reindex(session, config.id,
                         options_of(config).knowledge_language or "portuguese")


# FAQ.


def add_faq(session: Session, config_id: int, data: Any) -> KnowledgeFaq:
    get_config(session, config_id)
    count = session.scalar(select(func.count()).select_from(KnowledgeFaq)
                           .where(KnowledgeFaq.workflow_config_id == config_id)) or 0
    if count >= MAX_FAQ_ENTRIES:
        raise Invalid(f"a workflow config holds at most {MAX_FAQ_ENTRIES} FAQ entries")
    question, answer = _faq_values(data)
    row = KnowledgeFaq(workflow_config_id=config_id, question=question, answer=answer)
    session.add(row)
    session.flush()
    return row


def replace_faq(session: Session, config_id: int, faq_id: int, data: Any) -> KnowledgeFaq:
    row = get_faq(session, config_id, faq_id)
    row.question, row.answer = _faq_values(data)
    session.flush()
    return row


def delete_faq(session: Session, config_id: int, faq_id: int) -> None:
    session.delete(get_faq(session, config_id, faq_id))
    session.flush()


def get_faq(session: Session, config_id: int, faq_id: int) -> KnowledgeFaq:
    row = session.get(KnowledgeFaq, faq_id)
    if row is None or row.workflow_config_id != config_id:
        get_config(session, config_id)
        raise NotFound(f"FAQ entry {faq_id} not found in workflow config {config_id}")
    return row


def list_faq(session: Session, config_id: int) -> list[KnowledgeFaq]:
    get_config(session, config_id)
    return store.faq_entries(session, config_id, MAX_FAQ_ENTRIES)


def faq_view(row: KnowledgeFaq) -> dict[str, Any]:
    return {"id": row.id, "workflow_config_id": row.workflow_config_id,
            "question": row.question, "answer": row.answer,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat() if row.updated_at else None}


def _faq_values(data: Any) -> tuple[str, str]:
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object with 'question' and 'answer'")
    unknown = sorted(set(data) - {"question", "answer"})
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")
    values = []
    for name, most in (("question", MAX_QUESTION_CHARS), ("answer", MAX_ANSWER_CHARS)):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"'{name}' must be a non-empty string")
        if len(value) > most:
            raise Invalid(f"'{name}' must be at most {most} characters")
        values.append(value.strip())
    return values[0], values[1]
