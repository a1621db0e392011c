"""Message.extra on both databases: the keys MessageExtra names are read by name, and a row that
holds keys it does not name (written by an older release) loads, is answered, and keeps them."""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import make_config
from tests.zapreply.replies.test_responder import receive
from zapreply.replies import media, responder
from zapreply.storage.db import session_scope
from zapreply.storage.models import Message, extra_of

CHAT = "5511900000001@s.whatsapp.net"


def customer_message() -> Message:
    with session_scope() as session:
        return session.scalars(select(Message).where(Message.role == "customer")).one()


def test_a_message_recorded_now_reads_its_extra_by_name(database, wuzapi):
    receive(make_config(wuzapi), "oi", "X1")

    extra = extra_of(customer_message())

    assert (extra.get("sender"), extra.get("timestamp"), extra.get("reset")) == (
        CHAT, None, None)


def test_a_row_with_keys_no_longer_named_loads_is_answered_and_keeps_them(
        database, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "X2")
    with session_scope() as session:
        row = session.scalars(select(Message)).one()
        row.extra = {**row.extra, "quoted_v0": "pedido 12",
                     "media": {"mimetype": "image/jpeg", "base64": "AAAA", "hint_v0": 1}}

    loaded = customer_message()
    assert extra_of(loaded).get("sender") == CHAT
    with session_scope() as session:
        media.drop_inline(session.get(Message, loaded.id))
    assert responder.answer_conversation(conversation_id, owner="test") == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi"]
    assert customer_message().extra == {
        "timestamp": None, "sender": CHAT, "quoted_v0": "pedido 12",
        "media": {"mimetype": "image/jpeg", "hint_v0": 1}}
