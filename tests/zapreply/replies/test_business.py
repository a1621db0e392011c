"""Sending what an operator wrote as the business: once, retried while a retry can help."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.console_app.conftest import make_conversation
from tests.factories import make_config
from zapreply.actions import outreach
from zapreply.replies import business
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, Message


def _written(wuzapi, text: str = "Oi, aqui é a loja") -> int:  # type: ignore[no-untyped-def]
    conversation_id = make_conversation(config_id=make_config(wuzapi.url))
    with session_scope() as session:
        return outreach.write_as_business(session, conversation_id, text, actor="operator:ana").id


def _message(message_id: int) -> Message:
    with session_scope() as session:
        return session.get(Message, message_id)


def _event_types() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Event.type).order_by(Event.id)))


def test_it_is_sent_once_under_its_own_whatsapp_id(db, wuzapi):
    message_id = _written(wuzapi)
    assert business.send_business_message(message_id, attempt=1) == "sent"
    assert business.send_business_message(message_id, attempt=1) == "nothing to send"
    [sent] = wuzapi.sent()
    message = _message(message_id)
    assert sent["body"] == {"Phone": "5511900000001@s.whatsapp.net", "Body": "Oi, aqui é a loja",
                            "Id": message.wa_message_id}
    assert sent["headers"]["Token"] == "secret-user-token"
    assert message.status == "sent" and message.provider_message_id == message.wa_message_id
    assert _event_types()[-1] == "message.sent"


def test_a_passing_failure_is_retried_and_a_permanent_one_marks_it_failed(db, wuzapi):
    message_id = _written(wuzapi)
    wuzapi.failures.extend([503, 400])
    with pytest.raises(business.Retry):
        business.send_business_message(message_id, attempt=1)
    assert _message(message_id).status == "pending"
    assert business.send_business_message(message_id, attempt=2) == "failed"
    assert _message(message_id).status == "failed"
    assert _event_types()[-2:] == ["message.failed", "message.failed"]
    assert wuzapi.sent() == []
