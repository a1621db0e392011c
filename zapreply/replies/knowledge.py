"""The `search_knowledge` tool of a config with a knowledge base: its curated FAQ first, then
its passages by full-text search and, with an `embedding_model`, by vector similarity, the two
rankings combined by reciprocal rank fusion.

What counts as relevant: an FAQ entry whose question shares at least half of its words with
the query; a passage the full-text search matched (any word of the query, zapreply.storage.
knowledge); a passage whose embedding's cosine similarity to the query's is at least
`knowledge_min_similarity`. When nothing is relevant the model is told so in plain words
(with `knowledge_only`, also that it must not answer from elsewhere).

Embeddings: the receiver, where documents are added, never loads litellm, so passages are
embedded here, by the worker, before a search compares vectors: up to EMBED_PER_SEARCH of the
config's passages not yet embedded by its model, in batches. Until a passage has its vector it
is found by full-text search alone. Vectors are compared by pgvector where the database has
the `vector` extension, otherwise in Python over at most MAX_VECTORS of them.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from zapreply.rules.options import Options
from zapreply.rules.text import normalize
from zapreply.settings import Settings
from zapreply.storage import knowledge as store
from zapreply.storage.db import session_scope

log = logging.getLogger(__name__)

# Reciprocal rank fusion's constant (Cormack et al. 2009): a passage's score is the sum of
# 1 / (RRF_K + its rank) over the rankings that found it.
RRF_K = 60
# Candidates each ranking contributes before fusion.
CANDIDATES = 50
EMBED_BATCH = 64
EMBED_PER_SEARCH = 256
MAX_VECTORS = 20_000
FAQ_MIN_OVERLAP = 0.5
FAQ_RESULTS = 2
FAQ_LIMIT = 500
NOTHING_FOUND = "nothing relevant found in the knowledge base for this query."
ONLY_KNOWLEDGE = ("Do not answer this from general knowledge: tell the customer you do not "
                  "have that information, or hand the conversation to a person with "
                  "handoff_to_human if they need an answer.")


class Search:
    """`search_knowledge` bound to one config, for one reply (within its deadline)."""

    def __init__(self, config_id: int, options: Options, settings: Settings,
                 deadline: float | None = None) -> None:
        self.config_id = config_id
        self.options = options
        self.settings = settings
        self.deadline = deadline

    def __call__(self, query: str) -> tuple[str, dict[str, Any]]:
        try:
            return self._search(query)
        except SQLAlchemyError as exc:
            log.warning("config %s: knowledge search failed: %s", self.config_id,
                        type(exc).__name__)
            return ("error: the knowledge base cannot be searched right now",
                    {"error": type(exc).__name__})

    def _search(self, query: str) -> tuple[str, dict[str, Any]]:
        options = self.options
        details: dict[str, Any] = {"query": query}
        with session_scope() as session:
            faq = best_faq(store.faq_entries(session, self.config_id, FAQ_LIMIT), query)
            text_hits = store.search_text(session, self.config_id, query,
                                          language=options.knowledge_language or "portuguese",
                                          limit=CANDIDATES)
        vector_hits: list[tuple[int, float]] = []
        if options.embedding_model:
            vector_hits = self._vector_hits(query, details)
        fused = fuse([text_hits, vector_hits])[:options.knowledge_results or 5]
        with session_scope() as session:
            found = store.passages(session, [passage_id for passage_id, _ in fused])
        text_scores, similarities = dict(text_hits), dict(vector_hits)
        details["faq"] = [{"id": entry.id, "score": round(score, 4)} for entry, score in faq]
        details["passages"] = [
            {"id": passage_id, "score": round(score, 6),
             **({"text_score": round(text_scores[passage_id], 6)}
                if passage_id in text_scores else {}),
             **({"similarity": round(similarities[passage_id], 4)}
                if passage_id in similarities else {})}
            for passage_id, score in fused if passage_id in found]
        details["relevant"] = bool(faq or details["passages"])
        return self._result(faq, [found[p] for p, _ in fused if p in found]), details

    def _result(self, faq: list[tuple[Any, float]], passages: list[store.Passage]) -> str:
        if not faq and not passages:
            return NOTHING_FOUND + (" " + ONLY_KNOWLEDGE if self.options.knowledge_only else "")
        parts = []
        if faq:
            parts.append("Approved answers (FAQ), use them as they are:")
            parts.extend(f"Q: {entry.question}\nA: {entry.answer}" for entry, _ in faq)
        if passages:
            parts.append("From the business's documents:")
            parts.extend(f"[{p.title}] (passage {p.id})\n{p.content}" for p in passages)
        return "\n\n".join(parts)

    def _vector_hits(self, query: str, details: dict[str, Any]) -> list[tuple[int, float]]:
        from zapreply.llm import chat as llm

        model = self.options.embedding_model or ""
        minimum = self.options.knowledge_min_similarity
        minimum = 0.5 if minimum is None else minimum
        try:
            details["embedded"] = self._embed_missing(model)
            [vector] = llm.embed(model, [query], timeout=self._timeout())
        except llm.LLMError as exc:
            # The full-text ranking still answers; the event says why vectors did not.
            details["embedding_error"] = str(exc)[:300]
            return []
        with session_scope() as session:
            if store.has_pgvector(session):
                details["vectors"] = "pgvector"
                return store.search_vectors_pgvector(session, self.config_id, model, vector,
                                                     min_similarity=minimum, limit=CANDIDATES)
            stored = store.embeddings(session, self.config_id, model, MAX_VECTORS)
        details["vectors"] = "python"
        return nearest(vector, stored, minimum=minimum, limit=CANDIDATES)

    def _embed_missing(self, model: str) -> int:
        from zapreply.llm import chat as llm

        with session_scope() as session:
            missing = store.without_embedding(session, self.config_id, model, EMBED_PER_SEARCH)
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start:start + EMBED_BATCH]
            vectors = llm.embed(model, [content for _, content in batch],
                                timeout=self._timeout())
            with session_scope() as session:
                store.store_embeddings(session, model, [
                    (passage_id, vector) for (passage_id, _), vector in zip(
                        batch, vectors, strict=True)])
        return len(missing)

    def _timeout(self) -> float:
        timeout = self.settings.llm_timeout_seconds
        if self.deadline is not None:
            timeout = min(timeout, max(self.deadline - time.monotonic(), 1.0))
        return timeout


def fuse(rankings: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings (each best first): ids by their summed 1/(k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (passage_id, _) in enumerate(ranking, start=1):
            scores[passage_id] = scores.get(passage_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def nearest(vector: Sequence[float], stored: Sequence[tuple[int, Sequence[float]]], *,
            minimum: float, limit: int) -> list[tuple[int, float]]:
    """The stored vectors at least `minimum` cosine-similar to `vector`, most similar first."""
    norm = math.hypot(*vector) or 1.0
    query = [v / norm for v in vector]
    scored = []
    for passage_id, other in stored:
        if len(other) != len(query):
            continue  # made by another version of the model: re-embedded on its next change
        # In C: hypot and map(mul) are several times faster than a generator over zip.
        similarity = sum(map(operator.mul, query, other)) / (math.hypot(*other) or 1.0)
        if similarity >= minimum:
            scored.append((passage_id, similarity))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:limit]


def best_faq(entries: Sequence[Any], query: str) -> list[tuple[Any, float]]:
    """The FAQ entries whose question shares at least FAQ_MIN_OVERLAP of its words with the
    query (accents, case, plurals and common words aside), best first."""
    asked = _faq_words(query)
    if not asked:
        return []
    scored = []
    for entry in entries:
        question = _faq_words(entry.question)
        if question:
            overlap = len(question & asked) / len(question)
            if overlap >= FAQ_MIN_OVERLAP:
                scored.append((entry, overlap))
    scored.sort(key=lambda item: (-item[1], item[0].id))
    return scored[:FAQ_RESULTS]


def _faq_words(text: str) -> set[str]:
    return {word[:-1] if len(word) > 4 and word.endswith("s") else word
            for word in store.words(normalize(text))
            if len(word) > 2 and word not in store.COMMON_WORDS}
