"""The whole path as a user meets it: WuzAPI posts a webhook to the running receiver (gunicorn),
a real Celery worker answers through litellm against the LLM stand-in, and the reply arrives at
the WuzAPI stand-in; the tables tell the story."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import fixture_bytes, fixture_json, signed
from tests.e2e import (
    all_events,
    events_of,
    fixture_body,
    fresh,
    post,
    wait_for,
    wait_for_event,
)
from tests.factories import make_config
from zapreply import settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")


def test_a_customer_message_is_answered_once_with_the_llm_reply(db, receiver, llm, wuzapi):
    make_config(wuzapi.url)

    response = post(receiver, fresh(fixture_bytes("message_text.raw.json")))

    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    sent = wuzapi.wait_for(lambda r: len(r) >= 1)
    assert sent[0]["path"] == "/chat/send/text"
    assert sent[0]["headers"]["Token"] == "secret-user-token"
    assert sent[0]["body"]["Phone"] == "5511900000001@s.whatsapp.net"
    assert sent[0]["body"]["Body"] == "Resposta: Olá! Vocês abrem amanhã?"
    assert sent[0]["body"]["Id"].startswith("3EB0")

    # The LLM saw the system prompt and the customer's words, and was offered the tools.
    request = llm.requests[0]["body"]
    assert request["messages"][0] == {"role": "system", "content": "Você é o atendente da Loja."}
    assert request["messages"][-1]["content"] == "Olá! Vocês abrem amanhã?"
    assert {t["function"]["name"] for t in request["tools"]} == {"send_whatsapp", "handoff_to_human"}

    wait_for_event("message.sent")
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.contact_phone == "5511900000001"
        assert conversation.contact_name == "Cliente Teste Um"
        rows = session.scalars(select(Message).order_by(Message.id)).all()
        assert [(m.role, m.status) for m in rows] == [("customer", None), ("assistant", "sent")]
        assert rows[1].provider_message_id == sent[0]["body"]["Id"]
        run = session.scalars(select(ReplyRun)).one()
        assert run.status == "sent"
        assert rows[0].reply_run_id == run.id
    completed = events_of("llm.completed")[0].payload
    assert completed["prompt_tokens"] == 42 and completed["completion_tokens"] == 7
    assert completed["latency_ms"] >= 0
    assert [e.type for e in all_events()] == [
        "message.received", "llm.completed", "message.sent",
    ]
    # No secret reaches the audit trail.
    assert "secret-user-token" not in json.dumps([e.payload for e in all_events()])


def test_the_form_encoding_is_answered_too(db, receiver, wuzapi):
    make_config(wuzapi.url)
    body = fresh(fixture_bytes("message_text.form.txt"))
    response = httpx.post(
        f"{receiver}/webhooks/wuzapi", content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **signed(body)}, timeout=10,
    )
    assert response.json()["status"] == "queued"
    sent = wuzapi.wait_for(lambda r: len(r) >= 1)
    assert sent[0]["body"]["Body"] == "Resposta: Olá! Vocês abrem amanhã?"


def test_a_delivery_repeated_five_times_at_once_gets_one_reply(db, receiver, wuzapi):
    from concurrent.futures import ThreadPoolExecutor

    make_config(wuzapi.url)
    body = fresh(fixture_bytes("message_text.raw.json"))
    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: post(receiver, body), range(5)))
    statuses = [r.json()["status"] for r in responses]
    assert set(statuses) <= {"queued", "duplicate"}
    # Copies the receiver recognised never reach the worker; wait until the rest are recorded.
    wait_for(lambda: len(events_of("message.received")) + len(events_of("message.duplicate"))
              >= statuses.count("queued"))
    wait_for_event("message.sent")
    assert len(events_of("message.received")) == 1, [(e.payload, e.conversation_id) for e in all_events()]
    assert len(wuzapi.sent()) == 1


def test_a_message_typed_by_the_business_is_never_answered_and_pauses_the_bot(
    db, receiver, wuzapi, llm
):
    make_config(wuzapi.url)
    response = post(receiver, fixture_bytes("message_from_me.json"))
    assert response.json()["status"] == "queued"
    wait_for_event("conversation.paused")

    # The customer writes again while the human is on it: the bot stays quiet.
    post(receiver, fixture_body("message_text.json", ID="3A0000000000000000C1"))
    wait_for(lambda: any(e.payload.get("reason") == "conversation paused"
                          for e in events_of("message.ignored")))
    assert wuzapi.sent() == []
    assert llm.requests == []
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.status == "paused"
        business = session.scalars(select(Message).where(Message.role == "business")).one()
        assert business.content == "Oi! Já te respondo por aqui."


def test_the_model_can_hand_the_conversation_to_a_human(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"handoff_text": "Um atendente já vai falar com você."})
    post(receiver, fixture_body("message_text.json", ID="3A0000000000000000D1"))
    # The body text is what steers the stand-in model.
    body = fixture_json("message_text.json")
    body["event"]["Info"]["ID"] = "3A0000000000000000D2"
    body["event"]["Message"]["conversation"] = "quero falar com um humano #handoff"
    wait_for_event("message.sent")
    wuzapi.reset()
    post(receiver, json.dumps(body).encode())

    wait_for_event("handoff.requested")
    sent = wuzapi.wait_for(lambda r: len(r) >= 2)
    assert [r["body"]["Body"] for r in sent] == [
        "Vou te passar para um atendente.", "Um atendente já vai falar com você.",
    ]
    handoff = events_of("handoff.requested")[0]
    assert handoff.payload["reason"] == "pediu humano"
    assert [e.payload["name"] for e in events_of("tool.called")] == ["handoff_to_human"]
    with session_scope() as session:
        assert session.scalars(select(Conversation)).one().status == "paused"

    # Paused until an operator resumes: the next message is not answered.
    wuzapi.reset()
    body["event"]["Info"]["ID"] = "3A0000000000000000D3"
    body["event"]["Message"]["conversation"] = "alô?"
    post(receiver, json.dumps(body).encode())
    wait_for(lambda: any(e.payload.get("reason") == "conversation paused"
                          for e in events_of("message.ignored")))
    assert wuzapi.sent() == []


def test_send_whatsapp_tool_messages_are_the_reply(db, receiver, wuzapi):
    make_config(wuzapi.url)
    body = json.loads(fresh(fixture_bytes("message_text.json")))
    body["event"]["Message"]["conversation"] = "me manda pela ferramenta #tool"
    post(receiver, json.dumps(body).encode())
    wait_for_event("message.sent")
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Via ferramenta"]
    tool_event = events_of("tool.called")[0].payload
    assert tool_event["name"] == "send_whatsapp"
    assert tool_event["arguments"] == {"message": "Via ferramenta"}


def test_group_messages_and_receipts_are_not_answered(db, receiver, wuzapi, llm):
    make_config(wuzapi.url)
    group = post(receiver, fixture_bytes("message_group.json"))
    receipt = post(receiver, fixture_bytes("read_receipt.json"))
    assert group.json() == {"status": "ignored", "reason": "group chat"}
    assert receipt.json()["status"] == "ignored"
    wait_for_event("message.ignored")
    assert events_of("message.ignored")[0].payload["reason"] == "group chat"
    assert llm.requests == [] and wuzapi.sent() == []


def test_livchat_driver_sends_through_its_api(db, receiver, wuzapi):
    make_config(wuzapi.url, send={"driver": "livchat", "base_url": wuzapi.url, "token": "lc-tok"})
    post(receiver, fresh(fixture_bytes("message_text.raw.json")))
    sent = wuzapi.wait_for(lambda r: len(r) >= 1)
    assert sent[0]["path"] == "/api/v1/messages/send"
    assert sent[0]["headers"]["Authorization"] == "Bearer lc-tok"
    assert sent[0]["body"] == {"phone": "5511900000001", "message": "Resposta: Olá! Vocês abrem amanhã?"}


def test_a_burst_within_the_debounce_window_gets_one_reply_to_all_of_it(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, debounce_seconds=1.5)
    body = fixture_json("message_text.json")
    for index, text in enumerate(["oi", "tudo bem?", "qual o horário?"]):
        body["event"]["Info"]["ID"] = f"3A00000000000000B00{index}"
        body["event"]["Message"]["conversation"] = text
        assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"
    wait_for_event("message.sent")
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi | tudo bem? | qual o horário?"]
    assert len(llm.requests) == 1


def _niceness(pid: int) -> int:
    # /proc/<pid>/stat: the 19th field, counted after the command's closing parenthesis.
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_the_worker_yields_the_cpu_to_the_receiver(worker_process):
    # WORKER_NICE (default 10) on top of the niceness it was started with (this process's).
    assert _niceness(worker_process.pid) == min(os.nice(0) + 10, 19)


@pytest.mark.parametrize("value", ["-1", "20", "ten"])
def test_a_worker_nice_outside_0_to_19_is_refused(value, monkeypatch):
    monkeypatch.setenv("WORKER_NICE", value)
    with pytest.raises(ValueError, match="WORKER_NICE"):
        settings.load()
