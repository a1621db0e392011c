"""The search_knowledge tool in a reply run, on PostgreSQL and SQLite alike: offered only to a
config with a knowledge base, FAQ first, passages by full-text search and by embeddings (the
LLM stand-in's /v1/embeddings) fused, `knowledge_only`, and the `tool.called` event with the
passages' ids and scores."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.documents import DELIVERY, HOURS, RETURNS
from tests.factories import make_config
from tests.zapreply.replies.test_responder import answer, receive
from zapreply.actions import documents, knowledge
from zapreply.replies import knowledge as search_module
from zapreply.replies.prompt import KNOWLEDGE_ONLY
from zapreply.rules.options import Options
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, KnowledgePassage

pytestmark = pytest.mark.usefixtures("database")


def add(config_id: int, title: str, content: str) -> int:
    with session_scope() as session:
        return knowledge.add_document(session, config_id,
                                      documents.from_text(title, content)).id


def passage_of(document_id: int) -> int:
    with session_scope() as session:
        return session.scalar(select(KnowledgePassage.id)
                              .where(KnowledgePassage.document_id == document_id))


def tool_events(conversation_id: int) -> list[dict]:
    with session_scope() as session:
        return [e.payload for e in session.scalars(
            select(Event).where(Event.conversation_id == conversation_id,
                                Event.type == "tool.called").order_by(Event.id))]


def offered(llm) -> list[str]:  # type: ignore[no-untyped-def]
    return [t["function"]["name"] for t in llm.chat_requests()[0]["body"].get("tools", [])]


def search(config_id: int, query: str, **options) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
    return search_module.Search(config_id, Options.of(options), get_settings())(query)


def test_a_config_with_documents_gets_the_tool_and_the_reply_quotes_the_passage(llm, wuzapi):
    config_id = make_config(wuzapi)
    delivery = add(config_id, "Entregas", DELIVERY)
    add(config_id, "Trocas", RETURNS)
    conversation_id = receive(config_id, "#search taxa de entrega para Campinas", "K1")

    assert answer(conversation_id) == 1

    assert offered(llm) == ["send_whatsapp", "handoff_to_human", "search_knowledge"]
    reply = "\n\n".join(r["body"]["Body"] for r in wuzapi.sent())
    assert reply.startswith("Conhecimento: From the business's documents:")
    assert f"[Entregas] (passage {passage_of(delivery)})" in reply and "R$ 25,00" in reply
    assert "Trocas" not in reply
    [event] = tool_events(conversation_id)
    assert event["name"] == "search_knowledge"
    assert event["arguments"] == {"query": "taxa de entrega para Campinas"}
    assert [p["id"] for p in event["passages"]] == [passage_of(delivery)]
    assert event["passages"][0]["score"] > 0 and event["passages"][0]["text_score"] > 0
    assert event["relevant"] is True and event["faq"] == []


def test_a_config_without_knowledge_is_not_offered_the_tool(llm, wuzapi):
    conversation_id = receive(make_config(wuzapi, options={"knowledge_only": True}), "oi", "K2")
    assert answer(conversation_id) == 1
    assert offered(llm) == ["send_whatsapp", "handoff_to_human"]
    assert KNOWLEDGE_ONLY not in llm.chat_requests()[0]["body"]["messages"][0]["content"]


def test_knowledge_only_tells_the_model_and_says_plainly_when_nothing_is_found(llm, wuzapi):
    config_id = make_config(wuzapi, options={"knowledge_only": True})
    add(config_id, "Entregas", DELIVERY)
    conversation_id = receive(config_id, "#search aceitam criptomoedas", "K3")

    assert answer(conversation_id) == 1

    system = llm.chat_requests()[0]["body"]["messages"][0]["content"]
    assert system == f"Você é o atendente da Loja.\n\n{KNOWLEDGE_ONLY}"
    reply = "\n\n".join(r["body"]["Body"] for r in wuzapi.sent())
    assert reply == ("Conhecimento: " + search_module.NOTHING_FOUND + " "
                     + search_module.ONLY_KNOWLEDGE)
    [event] = tool_events(conversation_id)
    assert event["passages"] == [] and event["relevant"] is False


def test_without_knowledge_only_nothing_found_is_said_without_the_instruction(wuzapi):
    config_id = make_config(wuzapi)
    add(config_id, "Entregas", DELIVERY)
    result, details = search(config_id, "criptomoedas")
    assert result == search_module.NOTHING_FOUND
    assert details["relevant"] is False


def test_the_faq_is_searched_first_and_shown_before_the_documents(wuzapi):
    config_id = make_config(wuzapi)
    add(config_id, "Horário", HOURS)
    with session_scope() as session:
        entry = knowledge.add_faq(session, config_id, {
            "question": "Qual o horário de funcionamento?",
            "answer": "Segunda a sábado, 9h às 18h; domingo fechado."})
        knowledge.add_faq(session, config_id, {"question": "Vocês entregam?",
                                               "answer": "Sim."})
        entry_id = entry.id

    result, details = search(config_id, "horario de funcionamento no domingo")

    assert result.startswith("Approved answers (FAQ), use them as they are:\n\n"
                             "Q: Qual o horário de funcionamento?\n"
                             "A: Segunda a sábado, 9h às 18h; domingo fechado.\n\n"
                             "From the business's documents:")
    assert details["faq"] == [{"id": entry_id, "score": 1.0}]
    assert len(details["passages"]) == 1


def test_embeddings_find_a_passage_the_words_alone_would_rank_lower_and_are_fused(llm, wuzapi):
    config_id = make_config(wuzapi)
    delivery = add(config_id, "Entregas", DELIVERY)
    returns = add(config_id, "Trocas", RETURNS)
    hours = add(config_id, "Horário", HOURS)
    options = {"embedding_model": "openai/stub-embedding", "knowledge_min_similarity": 0.3}

    result, details = search(config_id, "devolver produto com nota fiscal", **options)

    assert details["vectors"] == "python" and details["embedded"] == 3
    assert details["passages"][0]["id"] == passage_of(returns)
    top = details["passages"][0]
    assert top["similarity"] >= 0.3 and top["text_score"] > 0
    # Found by both rankings: the sum of its two reciprocal ranks.
    assert top["score"] == pytest.approx(2 / 61, abs=1e-6)
    assert {p["id"] for p in details["passages"]} <= {passage_of(d)
                                                      for d in (delivery, returns, hours)}
    assert result.index("[Trocas]") < result.find("[Entregas]") or "[Entregas]" not in result
    with session_scope() as session:
        stored = session.scalars(select(KnowledgePassage.embedding_model)).all()
    assert stored == ["openai/stub-embedding"] * 3

    # Embedded once: the next search embeds only the query.
    before = len([r for r in llm.requests if r["path"].endswith("/embeddings")])
    _, again = search(config_id, "nota fiscal", **options)
    assert again["embedded"] == 0
    assert len([r for r in llm.requests if r["path"].endswith("/embeddings")]) == before + 1


def test_a_failing_embedding_model_leaves_the_full_text_search_answering(llm, wuzapi):
    config_id = make_config(wuzapi)
    delivery = add(config_id, "Entregas", DELIVERY)
    llm.fail_status = 500

    result, details = search(config_id, "entrega Campinas",
                             embedding_model="openai/stub-embedding")

    llm.fail_status = None
    assert details["embedding_error"]
    assert [p["id"] for p in details["passages"]] == [passage_of(delivery)]
    assert "[Entregas]" in result


def test_reciprocal_rank_fusion_adds_the_ranks_of_both_rankings():
    fused = search_module.fuse([[(1, 9.0), (2, 5.0)], [(2, 0.9), (3, 0.8)]])
    assert [passage_id for passage_id, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_vectors_below_the_minimum_similarity_are_not_relevant():
    stored = [(1, [1.0, 0.0]), (2, [0.6, 0.8]), (3, [0.0, 1.0]), (4, [1.0, 0.0, 0.0])]
    assert search_module.nearest([1.0, 0.0], stored, minimum=0.5, limit=10) == [
        (1, 1.0), (2, pytest.approx(0.6))]
