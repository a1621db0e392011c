"""A config's knowledge base through its use cases, on PostgreSQL and SQLite alike: documents
and FAQ entries added, listed, replaced and deleted; their passages found by full-text search
and gone from it with them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.documents import DELIVERY, HOURS, RETURNS
from tests.factories import make_config
from zapreply.actions import configs as config_actions
from zapreply.actions import documents, knowledge
from zapreply.actions.errors import Invalid, NotFound
from zapreply.storage import knowledge as store
from zapreply.storage.db import session_scope
from zapreply.storage.models import KnowledgeDocument, KnowledgePassage, WorkflowConfig

pytestmark = pytest.mark.usefixtures("database")


def add(config_id: int, title: str, content: str) -> int:
    with session_scope() as session:
        return knowledge.add_document(session, config_id,
                                      documents.from_text(title, content)).id


def found(config_id: int, query: str, language: str = "portuguese") -> list[str]:
    """The titles of the passages a full-text search finds, best first."""
    with session_scope() as session:
        hits = store.search_text(session, config_id, query, language=language, limit=10)
        passages = store.passages(session, [passage_id for passage_id, _ in hits])
        return [passages[passage_id].title for passage_id, _ in hits]


def passage_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(KnowledgePassage))


def test_documents_are_added_listed_and_found_by_their_words(wuzapi):
    config_id = make_config(wuzapi)
    add(config_id, "Entregas", DELIVERY)
    add(config_id, "Trocas", RETURNS)
    add(config_id, "Horário", HOURS)

    with session_scope() as session:
        listed = knowledge.list_documents(session, config_id)
    assert [(d["title"], d["kind"], d["passages"]) for d in listed] == [
        ("Entregas", "text", 1), ("Trocas", "text", 1), ("Horário", "text", 1)]
    assert found(config_id, "Qual a taxa de entrega para Campinas?") == ["Entregas"]
    assert found(config_id, "quero devolver um produto") == ["Trocas"]
    # Accents as typed or not.
    assert found(config_id, "horario de funcionamento") == ["Horário"]
    assert found(config_id, "criptomoedas") == []
    assert found(config_id, "  ?? ") == []


def test_plural_and_singular_find_each_other(wuzapi):
    config_id = make_config(wuzapi)
    add(config_id, "Trocas", RETURNS)
    assert found(config_id, "devoluções") == ["Trocas"]
    assert found(config_id, "produtos") == ["Trocas"]


def test_a_search_sees_only_its_own_configs_documents(wuzapi):
    mine, theirs = make_config(wuzapi), make_config(wuzapi)
    add(theirs, "Entregas", DELIVERY)
    assert found(mine, "entrega Campinas") == []
    assert found(theirs, "entrega Campinas") == ["Entregas"]


def test_a_replaced_document_is_found_by_its_new_text_only(wuzapi):
    config_id = make_config(wuzapi)
    document_id = add(config_id, "Entregas", DELIVERY)
    with session_scope() as session:
        knowledge.replace_document(session, config_id, document_id,
                                   documents.from_text("Política de trocas", RETURNS))
    assert found(config_id, "entrega Campinas") == []
    assert found(config_id, "devolver produto") == ["Política de trocas"]
    assert passage_count() == 1


def test_a_deleted_document_and_a_deleted_config_leave_nothing_to_find(wuzapi):
    config_id = make_config(wuzapi)
    document_id = add(config_id, "Entregas", DELIVERY)
    add(config_id, "Trocas", RETURNS)
    with session_scope() as session:
        knowledge.delete_document(session, config_id, document_id)
    assert found(config_id, "entrega Campinas") == []
    assert passage_count() == 1

    with session_scope() as session:
        config_actions.delete_config(session, config_id)
    assert passage_count() == 0
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(KnowledgeDocument)) == 0


def test_a_long_document_is_split_into_passages_found_apart(wuzapi):
    config_id = make_config(wuzapi)
    filler = "\n\n".join(f"Parágrafo {n} sobre assuntos gerais da loja." * 8 for n in range(10))
    add(config_id, "Manual", f"{filler}\n\nA garantia estendida custa R$ 99.\n\n{filler}")
    with session_scope() as session:
        hits = store.search_text(session, config_id, "garantia estendida",
                                 language="portuguese", limit=10)
        [passage] = store.passages(session, [passage_id for passage_id, _ in hits]).values()
        total = session.scalar(select(func.count()).select_from(KnowledgePassage))
    assert total > 3
    assert "garantia estendida" in passage.content and len(passage.content) <= 1200


def test_documents_and_faq_of_a_missing_config_or_of_another_are_not_found(wuzapi):
    config_id, other = make_config(wuzapi), make_config(wuzapi)
    document_id = add(config_id, "Entregas", DELIVERY)
    with session_scope() as session:
        with pytest.raises(NotFound, match="workflow config 999 not found"):
            knowledge.add_document(session, 999, documents.from_text("T", "texto"))
        with pytest.raises(NotFound, match=f"document {document_id} not found"):
            knowledge.get_document(session, other, document_id)
        with pytest.raises(NotFound, match="FAQ entry 5 not found"):
            knowledge.delete_faq(session, config_id, 5)


def test_faq_entries_are_added_replaced_listed_and_deleted(wuzapi):
    config_id = make_config(wuzapi)
    with session_scope() as session:
        entry = knowledge.add_faq(session, config_id, {"question": " Vocês abrem domingo? ",
                                                       "answer": "Não, só de segunda a sábado."})
        entry_id = entry.id
    with session_scope() as session:
        knowledge.replace_faq(session, config_id, entry_id,
                              {"question": "Abrem no domingo?", "answer": "Não."})
        assert [(e.question, e.answer) for e in knowledge.list_faq(session, config_id)] == [
            ("Abrem no domingo?", "Não.")]
        assert store.has_knowledge(session, config_id)
    with session_scope() as session:
        knowledge.delete_faq(session, config_id, entry_id)
        assert knowledge.list_faq(session, config_id) == []
        assert not store.has_knowledge(session, config_id)


@pytest.mark.parametrize("data, reason", [
    ({"question": "Q"}, "'answer' must be a non-empty string"),
    ({"question": " ", "answer": "A"}, "'question' must be a non-empty string"),
    ({"question": "Q", "answer": "A", "extra": 1}, "unknown field(s): extra"),
    ({"question": "Q" * 501, "answer": "A"}, "'question' must be at most 500 characters"),
    (["Q", "A"], "body must be a JSON object"),
])
def test_a_bad_faq_entry_is_refused_with_its_reason(wuzapi, data, reason):
    config_id = make_config(wuzapi)
    with session_scope() as session:
        with pytest.raises(Invalid) as refused:
            knowledge.add_faq(session, config_id, data)
    assert reason in refused.value.message


def test_a_new_knowledge_language_reindexes_the_passages(wuzapi):
    config_id = make_config(wuzapi)
    add(config_id, "Shipping", "We ship every order within two business days.")
    with session_scope() as session:
        config_actions.update_config(session, config_id,
                                     {"options": {"knowledge_language": "english"}})
    with session_scope() as session:
        languages = set(session.scalars(select(KnowledgePassage.language)))
        assert session.get(WorkflowConfig, config_id).options["knowledge_language"] == "english"
    assert languages == {"english"}
    # English stemming: "shipped" and "orders" find "ship" and "order" (on SQLite, prefixes).
    assert found(config_id, "shipping orders", language="english") == ["Shipping"]



def test_a_worker_asks_whether_a_config_has_knowledge_once_per_config_cache_period(wuzapi):
    from dataclasses import replace

    from zapreply import settings as settings_module
    from zapreply.rules import configs

    config_id = make_config(wuzapi)
    suite = settings_module.get_settings()
    settings_module.override(replace(suite, config_cache_seconds=60.0))
    try:
        with session_scope() as session:
            assert not configs.has_knowledge(session, config_id)
        add(config_id, "Entrega", DELIVERY)
        with session_scope() as session:
            assert store.has_knowledge(session, config_id)
            # Kept like the config row itself: the first document applies once it expires.
            assert not configs.has_knowledge(session, config_id)
            configs.clear_cache()
            assert configs.has_knowledge(session, config_id)
    finally:
        settings_module.override(suite)
        configs.clear_cache()
