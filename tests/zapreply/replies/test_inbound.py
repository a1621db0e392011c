"""Recording an inbound message and the intake's decisions on it, on both databases: PostgreSQL
records a message with its conversation in one statement (zapreply.storage.inbox), SQLite in
the portable statements that statement is checked against."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select, text

from tests.factories import INSTANCE, make_config
from tests.zapreply.replies.test_responder import event_types
from zapreply.replies import inbound
from zapreply.storage.db import get_engine, session_scope
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, utcnow

CHAT = "5511900000031@s.whatsapp.net"
GROUP = "120363000000000031@g.us"


def message(wa_id: str, text: str = "oi", **changes: Any) -> dict[str, Any]:
    return {"wa_message_id": wa_id, "chat_jid": CHAT, "sender_jid": CHAT,
            "contact_phone": CHAT.split("@")[0], "push_name": "Cliente", "from_me": False,
            "timestamp": None, "text": text, "media_type": None, **changes}


def in_group(wa_id: str, member: int, text: str = "oi") -> dict[str, Any]:
    sender = f"55119000{member:05d}@s.whatsapp.net"
    return message(wa_id, text, chat_jid=GROUP, sender_jid=sender,
                   contact_phone=sender.split("@")[0], is_group=True)


def from_chat(number: int, wa_id: str) -> dict[str, Any]:
    chat = f"55119000{number:05d}@s.whatsapp.net"
    return message(wa_id, chat_jid=chat, sender_jid=chat, contact_phone=chat.split("@")[0])


def record(config_id: int, body: dict[str, Any]) -> inbound.Recorded:
    with session_scope() as session:
        return inbound.record_inbound(session, config_id=config_id, instance=INSTANCE,
                                      message=body)


def skipped_runs() -> list[tuple[str, str]]:
    with session_scope() as session:
        return [(run.status, run.error) for run in
                session.scalars(select(ReplyRun).order_by(ReplyRun.id))]


def test_a_customer_message_opens_its_conversation_and_is_recorded_with_its_event(
        database, wuzapi):
    config_id = make_config(wuzapi, options={"new_conversations_per_minute": None})

    recorded = record(config_id, message("IN1", "quero um orçamento", timestamp="1700000000"))

    assert recorded.is_new and recorded.needs_reply
    with session_scope() as session:
        conversation = session.get(Conversation, recorded.conversation_id)
        assert (conversation.instance, conversation.chat_jid, conversation.contact_name,
                conversation.contact_phone, conversation.workflow_config_id,
                conversation.status) == (
            INSTANCE, CHAT, "Cliente", CHAT.split("@")[0], config_id, "active")
        assert conversation.last_inbound_at is not None
        rows = session.scalars(select(Message)).all()
        assert [(m.conversation_id, m.role, m.content, m.wa_message_id, m.reply_run_id, m.extra)
                for m in rows] == [
            (conversation.id, "customer", "quero um orçamento", "IN1", None,
             {"timestamp": "1700000000", "sender": CHAT})]
        [received] = session.scalars(select(Event)).all()
    assert (received.type, received.payload) == (
        "message.received", {"wa_message_id": "IN1", "role": "customer", "media_type": None})


def test_a_later_message_refreshes_the_contact_and_keeps_the_conversation(database, wuzapi):
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


def test_a_redelivered_message_is_recorded_once(database, wuzapi):
    config_id = make_config(wuzapi)
    first = record(config_id, message("IN4"))

    again = record(config_id, message("IN4"))

    assert again.conversation_id == first.conversation_id
    assert not again.is_new and again.needs_reply  # still unanswered: it must not be stranded
    with session_scope() as session:
        assert session.query(Message).count() == 1
    assert event_types(first.conversation_id) == ["message.received", "message.duplicate"]


def test_a_message_longer_than_the_limit_is_cut_and_its_length_kept(database, wuzapi):
    config_id = make_config(wuzapi, options={"max_input_chars": 5})

    record(config_id, message("LONG1", "abcdefghij"))

    with session_scope() as session:
        kept = session.scalars(select(Message)).one()
    assert (kept.content, kept.extra["truncated_from"]) == ("abcde", 10)


def test_the_rate_limit_counts_the_message_being_recorded(database, wuzapi):
    config_id = make_config(wuzapi, options={"rate_limit_per_minute": 2})

    results = [record(config_id, message(f"IN{5 + n}")) for n in range(3)]

    assert [r.needs_reply for r in results] == [True, True, False]
    assert skipped_runs() == [("skipped", "rate limited")]


def test_in_a_group_each_member_has_a_rate_limit_of_their_own(database, wuzapi):
    config_id = make_config(wuzapi, options={"rate_limit_per_minute": 1, "groups": "on"})

    first = record(config_id, in_group("G1", 1))
    other_member = record(config_id, in_group("G2", 2))
    first_again = record(config_id, in_group("G3", 1))

    assert (first.needs_reply, other_member.needs_reply, first_again.needs_reply) == (
        True, True, False)
    assert first.conversation_id == other_member.conversation_id == first_again.conversation_id
    assert skipped_runs() == [("skipped", "rate limited")]


def test_conversations_opened_past_the_instances_limit_are_recorded_not_answered(
        database, wuzapi):
    config_id = make_config(wuzapi, options={"new_conversations_per_minute": 2})

    opened = [record(config_id, from_chat(n, f"NEW{n}")) for n in range(4)]

    assert [r.needs_reply for r in opened] == [True, True, False, False]
    with session_scope() as session:
        assert session.query(Message).count() == 4
    assert skipped_runs() == [("skipped", "too many new conversations")] * 2
    assert event_types(opened[2].conversation_id) == ["message.received", "message.ignored"]


def test_a_turned_away_conversation_stays_so_for_its_first_minute_and_the_others_go_on(
        database, wuzapi):
    config_id = make_config(wuzapi, options={"new_conversations_per_minute": 1})
    first = record(config_id, from_chat(1, "A1"))
    turned_away = record(config_id, from_chat(2, "B1"))

    again = record(config_id, from_chat(2, "B2"))
    first_again = record(config_id, from_chat(1, "A2"))

    assert (first.needs_reply, turned_away.needs_reply) == (True, False)
    assert again.needs_reply is False
    assert first_again.needs_reply is True


def test_without_a_limit_every_new_conversation_is_answered(database, wuzapi):
    config_id = make_config(wuzapi, options={"new_conversations_per_minute": None})
    assert all(record(config_id, from_chat(n, f"FREE{n}")).needs_reply for n in range(5))


def waiting_on_a_lock(database: str) -> bool:
    """Whether another PostgreSQL backend of this database waits on a lock (SQLite: the
    second writer waits inside SQLite, where it cannot be seen; true at once)."""
    if database != "postgresql":
        return True
    with get_engine().connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())


def test_conversations_opened_at_once_are_counted_one_after_the_other(database, wuzapi):
    config_id = make_config(wuzapi, options={"new_conversations_per_minute": 1})
    second: list[inbound.Recorded] = []
    with session_scope() as session:
        first = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE,
                                       message=from_chat(1, "AT1"))
        # The second stranger writes while the first one's transaction is still open.
        other = threading.Thread(target=lambda: second.append(record(config_id,
                                                                     from_chat(2, "AT2"))))
        other.start()
        deadline = time.monotonic() + 10
        while not waiting_on_a_lock(database):
            assert time.monotonic() < deadline, "the second message never waited"
            time.sleep(0.01)
    other.join(timeout=30)

    assert first.needs_reply is True
    assert [r.needs_reply for r in second] == [False]
    assert skipped_runs() == [("skipped", "too many new conversations")]


def test_messages_of_one_chat_recorded_at_once_all_count_for_the_rate_limit(database, wuzapi):
    config_id = make_config(wuzapi, options={"rate_limit_per_minute": 1})
    second: list[inbound.Recorded] = []
    with session_scope() as session:
        first = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE,
                                       message=message("RL1"))
        # The second message of the chat is recorded while the first one's transaction is
        # still open, and counted once it has committed.
        other = threading.Thread(target=lambda: second.append(record(config_id,
                                                                     message("RL2"))))
        other.start()
        deadline = time.monotonic() + 10
        while not waiting_on_a_lock(database):
            assert time.monotonic() < deadline, "the second message never waited"
            time.sleep(0.01)
    other.join(timeout=30)

    assert first.needs_reply is True
    assert [r.needs_reply for r in second] == [False]
    assert skipped_runs() == [("skipped", "rate limited")]


def test_the_business_typing_on_its_phone_pauses_the_bot(database, wuzapi):
    config_id = make_config(wuzapi, options={"human_pause_minutes": 30})
    record(config_id, message("C1", "oi"))

    typed = record(config_id, message("B1", "Oi! Aqui é a Ana, da loja.", from_me=True))

    assert typed.is_new and not typed.needs_reply
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.status == "paused" and conversation.paused_until > utcnow()
        kept = session.scalars(select(Message).where(Message.wa_message_id == "B1")).one()
        assert (kept.role, kept.content) == ("business", "Oi! Aqui é a Ana, da loja.")
        # The business's words: its own name is not the customer's.
        assert conversation.contact_name == "Cliente"


def test_our_own_reply_echoed_back_is_not_a_human_taking_over(database, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = record(config_id, message("C2")).conversation_id
    with session_scope() as session:
        session.add(Message(conversation_id=conversation_id, instance=INSTANCE,
                            role="assistant", content="Olá!", status="sent",
                            provider_message_id="OUR1", extra={}))

    echoed = record(config_id, message("OUR1", "Olá!", from_me=True))

    assert not echoed.is_new and not echoed.needs_reply
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).status == "active"
        assert session.query(Message).count() == 2
    assert event_types(conversation_id) == ["message.received", "message.ignored"]


def test_an_ignored_delivery_is_recorded_on_its_chats_conversation(database, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = record(config_id, message("C3")).conversation_id

    with session_scope() as session:
        inbound.record_ignored(session, instance=INSTANCE, reason="reaction",
                               wa_message_id="R1", chat_jid=CHAT)
        inbound.record_ignored(session, instance=INSTANCE, reason="reaction",
                               wa_message_id="R2", chat_jid="5511999999999@s.whatsapp.net")

    with session_scope() as session:
        ignored = session.scalars(select(Event).where(Event.type == "message.ignored")
                                  .order_by(Event.id)).all()
    assert [(e.conversation_id, e.payload["wa_message_id"]) for e in ignored] == [
        (conversation_id, "R1"), (None, "R2")]


def test_a_quote_of_our_own_reply_is_kept_with_our_copy_of_its_text(database, wuzapi):
    config_id = make_config(wuzapi)
    first = record(config_id, message("IN-Q1", "vocês abrem sábado?"))
    with session_scope() as session:
        session.add(Message(conversation_id=first.conversation_id, instance=INSTANCE,
                            role="assistant", content="Abrimos das 9h às 13h.",
                            status="sent", provider_message_id="3EB0REPLY0001"))

    # WhatsApp's copy of the quoted text may be cut or stale: ours is what was said.
    record(config_id, message("IN-Q2", "pode ser às 10h?", quoted_id="3EB0REPLY0001",
                              quoted_sender="5511900000099@s.whatsapp.net",
                              quoted_text="Abrimos das 9h"))

    with session_scope() as session:
        quoting = session.scalars(select(Message).where(Message.wa_message_id == "IN-Q2")).one()
        ours = session.scalars(select(Message).where(Message.role == "assistant")).one()
        assert quoting.extra["quoted"] == {
            "id": "3EB0REPLY0001", "sender": "5511900000099@s.whatsapp.net",
            "text": "Abrimos das 9h às 13h.", "message_id": ours.id, "role": "assistant"}


def test_a_quote_of_a_message_we_never_saw_keeps_the_text_whatsapp_sent(database, wuzapi):
    config_id = make_config(wuzapi)

    record(config_id, message("IN-Q3", "e esse aqui?", quoted_id="3EB0UNKNOWN",
                              quoted_sender=CHAT, quoted_text="Camisa azul, tamanho M"))

    with session_scope() as session:
        quoting = session.scalars(select(Message)).one()
        assert quoting.extra["quoted"] == {"id": "3EB0UNKNOWN", "sender": CHAT,
                                           "text": "Camisa azul, tamanho M"}


def test_a_reaction_to_our_reply_is_kept_on_it_and_recorded_not_answered(database, wuzapi):
    config_id = make_config(wuzapi)
    first = record(config_id, message("IN-R1", "obrigado"))
    with session_scope() as session:
        reply = Message(conversation_id=first.conversation_id, instance=INSTANCE,
                        role="assistant", content="Por nada!", status="sent",
                        provider_message_id="3EB0REPLY0002")
        session.add(reply)
        session.flush()
        reply_id = reply.id

    def react(wa_id: str, emoji: str) -> None:
        with session_scope() as session:
            inbound.record_ignored(
                session, instance=INSTANCE, reason="reaction", wa_message_id=wa_id,
                chat_jid=CHAT,
                details={"target_id": "3EB0REPLY0002", "emoji": emoji, "from_me": False})

    react("IN-R2", "👍")
    react("IN-R3", "❤️")  # WhatsApp keeps one reaction per person: the new one replaces it

    with session_scope() as session:
        reactions = session.get(Message, reply_id).extra["reactions"]
        assert [(r["emoji"], r["from_me"]) for r in reactions] == [("❤️", False)]
        assert session.scalars(select(ReplyRun)).all() == []
        ignored = [e.payload for e in session.scalars(
            select(Event).where(Event.type == "message.ignored").order_by(Event.id))]
    assert [(p["reason"], p["emoji"], p["target_message_id"]) for p in ignored] == [
        ("reaction", "👍", reply_id), ("reaction", "❤️", reply_id)]

    react("IN-R4", "")  # an empty reaction takes it back
    with session_scope() as session:
        assert session.get(Message, reply_id).extra["reactions"] == []
