"""The reply pipeline's paths on both databases: PostgreSQL takes its one-statement fast paths
(zapreply.storage.outbox, zapreply.storage.runs), SQLite the portable statements they are
checked against. Each test runs on both and expects the same outcome."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.factories import make_config
from tests.zapreply.replies.test_responder import event_types, receive, run_of
from zapreply.replies import generate, leases, responder
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun, utcnow


@pytest.fixture
def database_env() -> dict[str, str]:
    """Retries without waiting out real backoffs."""
    return {"RETRY_BASE_SECONDS": "0.01", "RETRY_MAX_SECONDS": "0.05",
            "LLM_MAX_ATTEMPTS": "3", "SEND_MAX_ATTEMPTS": "3"}


def answer(conversation_id: int) -> int:
    return responder.answer_conversation(conversation_id, owner="test")


def outbox(conversation_id: int) -> list[tuple[str, str, int | None]]:
    with session_scope() as session:
        return [(m.content, m.status, m.seq) for m in session.scalars(
            select(Message).where(Message.conversation_id == conversation_id,
                                  Message.role == "assistant").order_by(Message.id))]


def lease_holder(conversation_id: int) -> str | None:
    with session_scope() as session:
        return session.get(Conversation, conversation_id).lease_owner


def test_a_text_reply_is_stored_and_delivered_once(database, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "P1")

    assert answer(conversation_id) == 1
    assert answer(conversation_id) == 0

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi"]
    assert len(llm.requests) == 1
    assert outbox(conversation_id) == [("Resposta: oi", "sent", 0)]
    assert run_of(conversation_id).status == "sent"
    assert event_types(conversation_id) == ["message.received", "llm.completed", "message.sent"]
    assert lease_holder(conversation_id) is None


def test_a_reply_in_paragraphs_goes_out_in_order_and_closes_its_run(database, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi, options={"split_paragraphs": True}), "oi\n\ntudo bem?", "P2")

    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi", "tudo bem?"]
    assert outbox(conversation_id) == [("Resposta: oi", "sent", 0), ("tudo bem?", "sent", 1)]
    assert run_of(conversation_id).status == "sent"
    assert lease_holder(conversation_id) is None


def test_a_reply_sent_through_a_tool_is_stored_with_its_call(database, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "#tool", "P3")

    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Via ferramenta"]
    assert event_types(conversation_id) == [
        "message.received", "llm.completed", "llm.completed", "tool.called", "message.sent"]


def test_a_run_whose_send_failed_resumes_without_asking_the_model_again(database, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "P4")
    wuzapi.failures.append(500)
    with pytest.raises(responder.RetryLater):
        answer(conversation_id)
    with session_scope() as session:
        session.get(ReplyRun, run_of(conversation_id).id).next_attempt_at = None

    assert answer(conversation_id) == 1

    assert [a["status"] for a in wuzapi.requests] == [500, 200]
    assert len({a["body"]["Id"] for a in wuzapi.requests}) == 1
    assert len(llm.requests) == 1
    assert outbox(conversation_id) == [("Resposta: oi", "sent", 0)]
    assert run_of(conversation_id).status == "sent"


def test_a_message_that_arrives_while_the_model_answers_gets_the_next_reply(
        database, llm, wuzapi, monkeypatch):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "oi", "P5")
    ask_the_model = generate.generate

    def while_another_arrives(*args, **kwargs):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(generate, "generate", ask_the_model)
        receive(config_id, "tudo bem?", "P6")
        return ask_the_model(*args, **kwargs)

    monkeypatch.setattr(generate, "generate", while_another_arrives)

    assert answer(conversation_id) == 2

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi", "Resposta: tudo bem?"]
    assert lease_holder(conversation_id) is None


def test_a_reply_whose_lease_was_lost_while_the_model_answered_writes_nothing(
        database, llm, wuzapi, monkeypatch):
    conversation_id = receive(make_config(wuzapi), "oi", "P7")
    ask_the_model = generate.generate

    def then_taken_over(*args, **kwargs):  # type: ignore[no-untyped-def]
        draft = ask_the_model(*args, **kwargs)
        with session_scope() as session:
            session.get(Conversation, conversation_id).lease_expires_at = utcnow()
        with session_scope() as session:
            assert leases.claim_conversation(session, conversation_id, "new", 30) is not None
        return draft

    monkeypatch.setattr(generate, "generate", then_taken_over)
    with pytest.raises(leases.LeaseLost):
        answer(conversation_id)

    assert wuzapi.sent() == []
    assert outbox(conversation_id) == []
    assert event_types(conversation_id) == ["message.received"]
    assert lease_holder(conversation_id) == "new"
