"""The knowledge base's SQL: documents and their passages, the full-text index, embeddings,
FAQ entries.

One portable API over two indexes: PostgreSQL keeps each passage's `to_tsvector(<language>,
content)` in `search_vector` (GIN index) and ranks with `ts_rank_cd`; SQLite keeps an FTS5
table in step by triggers (the migration's) and ranks with `bm25`. A query is reduced to its
words, any of which may match (OR): a customer's question rarely uses every word a passage
does. PostgreSQL stems and drops stop words by the config's language; FTS5 has no stemmer for
most languages, so on SQLite a word matches as a prefix (a plural's final s dropped) and short
and common words are left out.
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from zapreply.storage.models import KnowledgeDocument, KnowledgeFaq, KnowledgePassage

_WORD = re.compile(r"\w+", re.UNICODE)
# Without stop words from a stemmer (SQLite), these would match nearly every passage.
COMMON_WORDS = frozenset("""
a o e é as os um uma uns umas de do da dos das no na nos nas em por para pra com sem que se
ao aos à às ou mas como mais qual quais quando onde meu minha seu sua isso esse essa este
esta voce voces você vocês tem ter ser sao são foi vai the an and or of to in on for is are it
what how do does with your you can
""".split())


@dataclass(frozen=True)
class Passage:
    id: int
    document_id: int
    title: str
    content: str


def words(query: str) -> list[str]:
    """The words of a query, each once, in order; nothing that could be query syntax."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word.strip("_"):
            seen.setdefault(word.strip("_"), None)
    return list(seen)


def add_passages(session: Session, document: KnowledgeDocument, passages: Sequence[str],
                 language: str) -> None:
    """Index `passages` as `document`'s, in that order (its earlier ones deleted)."""
    session.execute(delete(KnowledgePassage)
                    .where(KnowledgePassage.document_id == document.id))
    if passages:
        session.execute(insert(KnowledgePassage), [
            {"document_id": document.id, "workflow_config_id": document.workflow_config_id,
             "position": position, "content": content, "language": language}
            for position, content in enumerate(passages)])
    if _postgresql(session):
        session.execute(text(
            "UPDATE knowledge_passages SET search_vector = "
            "to_tsvector(CAST(language AS regconfig), content) WHERE document_id = :id"),
            {"id": document.id})


def reindex(session: Session, config_id: int, language: str) -> int:
    """Index the config's passages in `language` (its knowledge_language changed); how many
    were."""
    if _postgresql(session):
        result = session.execute(text(
            "UPDATE knowledge_passages SET language = :language, search_vector = "
            "to_tsvector(CAST(:language AS regconfig), content) "
            "WHERE workflow_config_id = :config_id AND language <> :language"),
            {"language": language, "config_id": config_id})
    else:
        result = session.execute(
            update(KnowledgePassage)
            .where(KnowledgePassage.workflow_config_id == config_id,
                   KnowledgePassage.language != language)
            .values(language=language))
    return result.rowcount or 0


def passage_counts(session: Session, document_ids: Iterable[int]) -> dict[int, int]:
    ids = list(document_ids)
    if not ids:
        return {}
    return dict(session.execute(
        select(KnowledgePassage.document_id, func.count())
        .where(KnowledgePassage.document_id.in_(ids))
        .group_by(KnowledgePassage.document_id)).all())


def has_knowledge(session: Session, config_id: int) -> bool:
    """Whether the config has any passage or FAQ entry to search."""
    return bool(session.scalar(select(or_(
        exists().where(KnowledgePassage.workflow_config_id == config_id),
        exists().where(KnowledgeFaq.workflow_config_id == config_id)))))


def search_text(session: Session, config_id: int, query: str, *, language: str,
                limit: int) -> list[tuple[int, float]]:
    """Passage ids matching any word of `query`, best first, with their full-text score
    (higher is better; comparable within one search only)."""
    terms = words(query)
    if not terms:
        return []
    if _postgresql(session):
        rows = session.execute(text(
            "SELECT p.id, ts_rank_cd(p.search_vector, q) AS score "
            "FROM knowledge_passages p, to_tsquery(CAST(:language AS regconfig), :query) q "
            "WHERE p.search_vector @@ q AND p.workflow_config_id = :config_id "
            "ORDER BY score DESC, p.id LIMIT :limit"),
            {"language": language, "query": " | ".join(terms), "config_id": config_id,
             "limit": limit}).all()
        return [(row.id, float(row.score)) for row in rows]
    fts = [_fts_term(term) for term in terms
           if len(term) > 2 and term not in COMMON_WORDS]
    if not fts:
        return []
    # The match first, then the config: with the config's ids as a filter inside the match,
    # SQLite ran the match once per id (0.9 s for 300 passages instead of 4 ms).
    rows = session.execute(text(
        "WITH found AS MATERIALIZED (SELECT rowid AS id, bm25(knowledge_passages_fts) AS rank "
        "FROM knowledge_passages_fts WHERE knowledge_passages_fts MATCH :query) "
        "SELECT found.id, found.rank FROM found JOIN knowledge_passages p ON p.id = found.id "
        "WHERE p.workflow_config_id = :config_id ORDER BY found.rank, found.id LIMIT :limit"),
        {"query": " OR ".join(fts), "config_id": config_id, "limit": limit}).all()
    # bm25: lower is better, and negative.
    return [(row.id, -float(row.rank)) for row in rows]


def _fts_term(word: str) -> str:
    stem = word[:-1] if len(word) > 4 and word.endswith("s") else word
    return f'"{stem}"*'


def passages(session: Session, ids: Sequence[int]) -> dict[int, Passage]:
    if not ids:
        return {}
    rows = session.execute(
        select(KnowledgePassage.id, KnowledgePassage.document_id, KnowledgeDocument.title,
               KnowledgePassage.content)
        .join(KnowledgeDocument, KnowledgeDocument.id == KnowledgePassage.document_id)
        .where(KnowledgePassage.id.in_(list(ids)))).all()
    return {row.id: Passage(row.id, row.document_id, row.title, row.content) for row in rows}


def without_embedding(session: Session, config_id: int, model: str,
                      limit: int) -> list[tuple[int, str]]:
    """Passages not yet embedded by `model` (never, or by another model), oldest first."""
    rows = session.execute(
        select(KnowledgePassage.id, KnowledgePassage.content)
        .where(KnowledgePassage.workflow_config_id == config_id,
               or_(KnowledgePassage.embedding_model.is_(None),
                   KnowledgePassage.embedding_model != model))
        .order_by(KnowledgePassage.id).limit(limit)).all()
    return [(row.id, row.content) for row in rows]


def store_embeddings(session: Session, model: str,
                     vectors: Iterable[tuple[int, list[float]]]) -> None:
    for passage_id, vector in vectors:
        session.execute(update(KnowledgePassage).where(KnowledgePassage.id == passage_id)
                        .values(embedding=vector, embedding_model=model))


def embeddings(session: Session, config_id: int, model: str,
               limit: int) -> list[tuple[int, Sequence[float]]]:
    """The config's passage vectors by `model`, at most `limit` of them."""
    if _postgresql(session):
        # real[] as text is parsed number by number (~0.8 µs each: 0.2 s for 1,000 vectors);
        # its binary form is read whole (zapreply.storage.models.Vector keeps SQLite's so).
        rows = session.execute(text(
            "SELECT id, array_send(embedding) AS raw FROM knowledge_passages "
            "WHERE workflow_config_id = :config_id AND embedding_model = :model "
            "AND embedding IS NOT NULL ORDER BY id LIMIT :limit"),
            {"config_id": config_id, "model": model, "limit": limit}).all()
        return [(row.id, _from_array_send(row.raw)) for row in rows]
    rows = session.execute(
        select(KnowledgePassage.id, KnowledgePassage.embedding)
        .where(KnowledgePassage.workflow_config_id == config_id,
               KnowledgePassage.embedding_model == model,
               KnowledgePassage.embedding.is_not(None))
        .order_by(KnowledgePassage.id).limit(limit)).all()
    return [(row.id, row.embedding) for row in rows]


def _from_array_send(raw: bytes) -> array:
    """A one-dimensional real[] in PostgreSQL's binary format: a header (dimensions, flags,
    element type, then length and lower bound per dimension), then each element as a 4-byte
    length and a big-endian float."""
    dimensions = struct.unpack_from(">i", raw)[0]
    if dimensions == 0:
        return array("f")
    count = struct.unpack_from(">i", raw, 12)[0]
    words = array("f")
    words.frombytes(bytes(raw[20:20 + 8 * count]))
    if sys.byteorder == "little":
        words.byteswap()
    return words[1::2]


def has_pgvector(session: Session) -> bool:
    """Whether the database can compare vectors itself (PostgreSQL with the `vector` extension
    created in it)."""
    return _postgresql(session) and bool(session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")))


def search_vectors_pgvector(session: Session, config_id: int, model: str, vector: list[float],
                            *, min_similarity: float, limit: int) -> list[tuple[int, float]]:
    """Passage ids by cosine similarity to `vector`, computed by pgvector (an exact scan of the
    config's stored vectors: `real[]`, cast to `vector` as they are read)."""
    rows = session.execute(text(
        "SELECT id, score FROM (SELECT id, 1 - (CAST(embedding AS vector) "
        "<=> CAST(:vector AS vector)) AS score FROM knowledge_passages "
        "WHERE workflow_config_id = :config_id AND embedding_model = :model) s "
        "WHERE score >= :min ORDER BY score DESC, id LIMIT :limit"),
        {"vector": "[" + ",".join(repr(float(v)) for v in vector) + "]",
         "config_id": config_id, "model": model, "min": min_similarity,
         "limit": limit}).all()
    return [(row.id, float(row.score)) for row in rows]


def due_for_fetch(session: Session, now: datetime, limit: int) -> list[int]:
    """Documents read from a URL whose next fetch has come, the longest due first."""
    return list(session.scalars(
        select(KnowledgeDocument.id)
        .where(KnowledgeDocument.next_fetch_at <= now,
               KnowledgeDocument.source_url.is_not(None))
        .order_by(KnowledgeDocument.next_fetch_at, KnowledgeDocument.id).limit(limit)))


def claim_fetch(session: Session, document_id: int, now: datetime, lease: timedelta) -> bool:
    """Whether this caller may fetch the document: its next_fetch_at moved `lease` ahead, only
    if it was still due. Of two callers that saw it due, the second's UPDATE matches no row
    (PostgreSQL re-checks the condition on the row the first committed; SQLite runs one
    writer at a time)."""
    result = session.execute(
        update(KnowledgeDocument)
        .where(KnowledgeDocument.id == document_id, KnowledgeDocument.next_fetch_at <= now)
        # The claim is not an edit of the document.
        .values(next_fetch_at=now + lease, updated_at=KnowledgeDocument.updated_at)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def faq_entries(session: Session, config_id: int, limit: int) -> list[KnowledgeFaq]:
    return list(session.scalars(
        select(KnowledgeFaq).where(KnowledgeFaq.workflow_config_id == config_id)
        .order_by(KnowledgeFaq.id).limit(limit)))


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
