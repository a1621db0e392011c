from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.rules import conversations
from zapreply.storage.db import session_factory
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, utcnow


@pytest.fixture
def session(db: None) -> Iterator[Session]:
    with session_factory()() as session:
        yield session


def make_conversation(session: Session, chat: str = "5511999990001", **fields) -> Conversation:
    conversation = Conversation(
        instance="loja", chat_jid=f"{chat}@s.whatsapp.net", contact_phone=chat, **fields
    )
    session.add(conversation)
    session.flush()
    return conversation


def recorded(session: Session) -> list[Event]:
    return list(session.scalars(select(Event).order_by(Event.id)))


def test_pausing_sets_the_reason_and_end_and_records_an_event(session: Session) -> None:
    conversation = make_conversation(session)
    until = utcnow() + timedelta(minutes=30)

    conversations.pause(session, conversation, reason="human took over", until=until,
                        actor="business")
    session.commit()

    assert conversation.status == "paused"
    assert conversation.paused_until == until
    assert conversation.pause_reason == "human took over"
    [event] = recorded(session)
    assert event.type == EventType.CONVERSATION_PAUSED
    assert event.conversation_id == conversation.id
    assert event.payload == {"reason": "human took over", "until": until.isoformat(),
                             "actor": "business"}


def test_a_pause_without_an_end_lasts_until_resumed(session: Session) -> None:
    conversation = make_conversation(session)

    conversations.pause(session, conversation, reason="operator", actor="admin")

    assert conversations.is_paused(conversation, utcnow() + timedelta(days=3650))
    [event] = recorded(session)
    assert event.payload["until"] is None


def test_pausing_a_paused_conversation_replaces_the_pause_and_records_it_again(
    session: Session,
) -> None:
    conversation = make_conversation(session)
    conversations.pause(session, conversation, reason="first", actor="admin")
    until = utcnow() + timedelta(minutes=5)

    conversations.pause(session, conversation, reason="second", until=until, actor="business")

    assert (conversation.pause_reason, conversation.paused_until) == ("second", until)
    assert [e.payload["reason"] for e in recorded(session)] == ["first", "second"]


def test_pausing_a_conversation_not_yet_flushed_records_its_id(session: Session) -> None:
    conversation = Conversation(instance="loja", chat_jid="new@s.whatsapp.net")
    session.add(conversation)

    conversations.pause(session, conversation, reason="operator", actor="admin")
    session.flush()

    [event] = recorded(session)
    assert event.conversation_id == conversation.id is not None


def test_resuming_clears_the_pause_and_records_an_event(session: Session) -> None:
    conversation = make_conversation(session)
    until = utcnow() + timedelta(hours=1)
    conversations.pause(session, conversation, reason="human took over", until=until,
                        actor="business")

    assert conversations.resume(session, conversation, actor="admin") is True
    session.commit()

    assert (conversation.status, conversation.paused_until, conversation.pause_reason) == (
        "active", None, None)
    event = recorded(session)[-1]
    assert event.type == EventType.CONVERSATION_RESUMED
    assert event.payload == {"reason": "human took over", "until": until.isoformat(),
                             "actor": "admin"}


def test_resuming_an_active_conversation_does_nothing(session: Session) -> None:
    conversation = make_conversation(session)

    assert conversations.resume(session, conversation, actor="admin") is False
    session.flush()

    assert conversation.status == "active"
    assert recorded(session) == []


def test_resuming_a_pause_that_ran_out_clears_it_without_an_event(session: Session) -> None:
    conversation = make_conversation(
        session, status="paused", pause_reason="old", paused_until=utcnow() - timedelta(minutes=1)
    )

    assert conversations.resume(session, conversation, actor="admin") is False
    session.flush()

    assert (conversation.status, conversation.paused_until, conversation.pause_reason) == (
        "active", None, None)
    assert recorded(session) == []


def test_a_pause_is_over_once_its_end_passes() -> None:
    now = utcnow()
    conversation = Conversation(status="paused", paused_until=now + timedelta(seconds=1))

    assert conversations.is_paused(conversation, now)
    assert not conversations.is_paused(conversation, now + timedelta(seconds=1))
    assert not conversations.is_paused(Conversation(status="active"), now)


def test_the_public_view_reads_an_expired_pause_as_active(session: Session) -> None:
    now = utcnow()
    conversation = make_conversation(
        session, status="paused", pause_reason="lunch", paused_until=now - timedelta(seconds=1)
    )

    view = conversations.public_view(conversation, now)

    assert (view["status"], view["paused_until"], view["pause_reason"]) == ("active", None, None)


def test_the_public_view_shows_a_pause_and_no_lease_fields(session: Session) -> None:
    now = utcnow()
    until = now + timedelta(minutes=10)
    conversation = make_conversation(session, contact_name="Ana", lease_owner="worker-1",
                                     lease_token=7, lease_expires_at=now)
    conversations.pause(session, conversation, reason="lunch", until=until, actor="admin")
    session.flush()

    view = conversations.public_view(conversation, now)

    assert view == {
        "id": conversation.id,
        "instance": "loja",
        "chat_jid": "5511999990001@s.whatsapp.net",
        "contact_phone": "5511999990001",
        "contact_name": "Ana",
        "workflow_config_id": None,
        "status": "paused",
        "paused_until": until.isoformat(),
        "pause_reason": "lunch",
        "last_inbound_at": None,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }
    assert not any("lease" in key for key in view)


def test_the_paused_clause_agrees_with_is_paused(session: Session) -> None:
    now = utcnow()
    rows = [
        make_conversation(session, "1"),
        make_conversation(session, "2", status="paused"),
        make_conversation(session, "3", status="paused", paused_until=now + timedelta(minutes=1)),
        make_conversation(session, "4", status="paused", paused_until=now - timedelta(minutes=1)),
    ]

    paused_ids = set(session.scalars(
        select(Conversation.id).where(conversations.paused_clause(now))
    ))

    assert paused_ids == {row.id for row in rows if conversations.is_paused(row, now)}
    assert paused_ids == {rows[1].id, rows[2].id}
