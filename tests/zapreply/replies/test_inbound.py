"""Recording an inbound message: on PostgreSQL a customer's message and its conversation are
one statement; what it records is what the two statements recorded."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from tests.zapreply.replies.test_responder import event_types, make_config
from zapreply.replies import inbound
from zapreply.storage.db import get_engine, session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun

CHAT = "5511900000031@s.whatsapp.net"


def message(wa_id: str, text: str = "oi", **changes: Any) -> dict[str, Any]:
    return {"wa_message_id": wa_id, "chat_jid": CHAT, "sender_jid": CHAT,
            "contact_phone": CHAT.split("@")[0], "push_name": "Cliente", "from_me": False,
            "timestamp": None, "text": text, "media_type": None, **changes}


@pytest.fixture
def statements():  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def record(config_id: int, body: dict[str, Any]) -> inbound.Recorded:
    with session_scope() as session:
        return inbound.record_inbound(session, config_id=config_id, instance="loja",
                                      message=body)


def test_a_customer_message_and_its_new_conversation_are_one_statement(db, wuzapi, statements):
    config_id = make_config(wuzapi, new_conversations_per_minute=None)
    statements.clear()

    recorded = record(config_id, message("IN1", "quero um orçamento"))

    # The tests read configs afresh each time (CONFIG_CACHE_SECONDS=0); a worker has them
    # cached.
    written = [s for s in statements if not s.startswith("SELECT workflow_configs.")]
    assert len(written) == 1, written
    assert written[0].startswith("WITH conversation AS (INSERT INTO conversations ")
    assert recorded.is_new and recorded.needs_reply
    with session_scope() as session:
        conversation = session.get(Conversation, recorded.conversation_id)
        assert (conversation.instance, conversation.chat_jid, conversation.contact_name,
                conversation.contact_phone, conversation.workflow_config_id) == (
            "loja", CHAT, "Cliente", CHAT.split("@")[0], config_id)
        assert conversation.last_inbound_at is not None
        rows = session.scalars(select(Message)).all()
        assert [(m.conversation_id, m.role, m.content, m.wa_message_id) for m in rows] == [
            (conversation.id, "customer", "quero um orçamento", "IN1")]
    assert event_types(recorded.conversation_id) == ["message.received"]


def test_a_later_message_refreshes_the_contact_and_keeps_the_conversation(db, wuzapi):
    config_id = make_config(wuzapi)
    first = record(config_id, message("IN2", push_name="Cliente"))
    with session_scope() as session:
        before = session.get(Conversation, first.conversation_id).last_inbound_at

    second = record(config_id, message("IN3", push_name="Maria", contact_phone="5511000000000"))

    assert second.conversation_id == first.conversation_id and second.is_new
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        # The name follows the latest message; the number first known stays.
        assert conversation.contact_name == "Maria"
        assert conversation.contact_phone == CHAT.split("@")[0]
        assert conversation.last_inbound_at > before
        assert session.query(Message).count() == 2


def test_a_redelivered_message_is_recorded_once(db, wuzapi):
    config_id = make_config(wuzapi)
    first = record(config_id, message("IN4"))

    again = record(config_id, message("IN4"))

    assert again.conversation_id == first.conversation_id
    assert not again.is_new and again.needs_reply  # still unanswered: it must not be stranded
    with session_scope() as session:
        assert session.query(Message).count() == 1
    assert event_types(first.conversation_id) == ["message.received", "message.duplicate"]


def test_the_rate_limit_counts_the_message_being_recorded(db, wuzapi):
    config_id = make_config(wuzapi, rate_limit_per_minute=2)

    results = [record(config_id, message(f"IN{5 + n}")) for n in range(3)]

    assert [r.needs_reply for r in results] == [True, True, False]
    with session_scope() as session:
        skipped = session.scalars(select(ReplyRun)).one()
        assert (skipped.status, skipped.error) == ("skipped", "rate limited")


def from_chat(number: int, wa_id: str) -> dict[str, Any]:
    chat = f"55119000{number:05d}@s.whatsapp.net"
    return message(wa_id, chat_jid=chat, sender_jid=chat, contact_phone=chat.split("@")[0])


def test_conversations_opened_past_the_instances_limit_are_recorded_not_answered(db, wuzapi):
    config_id = make_config(wuzapi, new_conversations_per_minute=2)

    opened = [record(config_id, from_chat(n, f"NEW{n}")) for n in range(4)]

    assert [r.needs_reply for r in opened] == [True, True, False, False]
    with session_scope() as session:
        assert session.query(Message).count() == 4
        skipped = session.scalars(select(ReplyRun).order_by(ReplyRun.id)).all()
    assert [(run.status, run.error) for run in skipped] == [
        ("skipped", "too many new conversations")] * 2
    assert event_types(opened[2].conversation_id) == ["message.received", "message.ignored"]


def test_a_turned_away_conversation_stays_so_for_its_first_minute_and_the_others_go_on(db, wuzapi):
    config_id = make_config(wuzapi, new_conversations_per_minute=1)
    first = record(config_id, from_chat(1, "A1"))
    turned_away = record(config_id, from_chat(2, "B1"))

    again = record(config_id, from_chat(2, "B2"))
    first_again = record(config_id, from_chat(1, "A2"))

    assert (first.needs_reply, turned_away.needs_reply) == (True, False)
    assert again.needs_reply is False
    assert first_again.needs_reply is True


def test_the_limit_costs_a_new_conversation_a_lock_and_a_count_and_a_later_message_nothing(
        db, wuzapi, statements):
    config_id = make_config(wuzapi, new_conversations_per_minute=100)
    statements.clear()

    record(config_id, message("LIM1"))
    opening = [s for s in statements if not s.startswith("SELECT workflow_configs.")]
    statements.clear()
    record(config_id, message("LIM2"))
    later = [s for s in statements if not s.startswith("SELECT workflow_configs.")]

    assert len(opening) == 3
    assert opening[1].startswith("SELECT pg_advisory_xact_lock(")
    assert opening[2].startswith("SELECT count(*) AS count_1 FROM conversations WHERE")
    assert len(later) == 1


def test_without_a_limit_every_new_conversation_is_answered(db, wuzapi):
    config_id = make_config(wuzapi, new_conversations_per_minute=None)
    assert all(record(config_id, from_chat(n, f"FREE{n}")).needs_reply for n in range(5))
