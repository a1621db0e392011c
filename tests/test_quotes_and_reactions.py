"""Quoted messages and reactions through the running receiver and a real worker: the model sees
what a customer replies to, the admin API shows it, and a reaction to the bot's reply is kept
on that reply and never answered."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN, fixture_json
from tests.e2e import events_of, post, wait_for
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Message

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"


def envelope(message: dict[str, Any]) -> dict[str, Any]:
    body = fixture_json("message_text.json")
    body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    body["event"]["Message"] = message
    return body


def send(receiver: str, message: dict[str, Any]) -> dict[str, Any]:
    response = post(receiver, json.dumps(envelope(message)).encode())
    assert response.status_code == 200, response.text
    return response.json()


def our_reply() -> Message:
    """The bot's latest reply, once its delivery is recorded (WhatsApp's id for it is what a
    quote or a reaction names)."""
    def sent() -> Message | None:
        with session_scope() as session:
            return session.scalars(select(Message).where(
                Message.role == "assistant", Message.provider_message_id.is_not(None))
                .order_by(Message.id.desc())).first()
    wait_for(lambda: sent() is not None)
    return sent()


def admin_messages(receiver: str, conversation_id: int) -> list[dict[str, Any]]:
    response = httpx.get(f"{receiver}/api/conversations/{conversation_id}/messages",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def test_a_customer_replying_to_the_bot_is_answered_knowing_what_was_quoted(
        db, receiver, llm, wuzapi):
    make_config(wuzapi)
    send(receiver, {"conversation": "vocês abrem sábado?"})
    wait_for(lambda: len(wuzapi.sent()) == 1)
    reply = our_reply()

    send(receiver, {"extendedTextMessage": {"text": "pode ser às 10h?", "contextInfo": {
        "stanzaID": reply.provider_message_id, "participant": "5511900000099@s.whatsapp.net",
        "quotedMessage": {"conversation": "Resposta: vocês abrem"}}}})
    wait_for(lambda: len(wuzapi.sent()) == 2)

    last = llm.requests[-1]["body"]["messages"][-1]
    assert last["role"] == "user"
    assert last["content"] == (
        '[replying to our message: "Resposta: vocês abrem sábado?"]\npode ser às 10h?')
    quoting = [m for m in admin_messages(receiver, reply.conversation_id)
               if m["content"] == "pode ser às 10h?"]
    assert [m["quoted"] for m in quoting] == [{
        "id": reply.provider_message_id, "sender": "5511900000099@s.whatsapp.net",
        "text": "Resposta: vocês abrem sábado?", "message_id": reply.id, "role": "assistant"}]


def test_a_reaction_to_the_bots_reply_is_kept_on_it_and_not_answered(db, receiver, llm, wuzapi):
    make_config(wuzapi)
    send(receiver, {"conversation": "obrigado pela ajuda"})
    wait_for(lambda: len(wuzapi.sent()) == 1)
    reply = our_reply()
    calls = len(llm.requests)

    answer = send(receiver, {"reactionMessage": {
        "key": {"remoteJID": CUSTOMER, "fromMe": True, "ID": reply.provider_message_id},
        "text": "🙏", "senderTimestampMS": 1772454000000}})

    assert answer == {"status": "ignored", "reason": "reaction"}
    wait_for(lambda: any(e.payload.get("reason") == "reaction"
                         for e in events_of("message.ignored")))
    [event] = [e for e in events_of("message.ignored") if e.payload.get("reason") == "reaction"]
    assert (event.payload["emoji"], event.payload["target_message_id"]) == ("🙏", reply.id)
    shown = [m for m in admin_messages(receiver, reply.conversation_id) if m["id"] == reply.id]
    assert [[(r["emoji"], r["from_me"]) for r in m["reactions"]] for m in shown] == [
        [("🙏", False)]]
    assert len(llm.requests) == calls and len(wuzapi.sent()) == 1
