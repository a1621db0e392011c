"""What one sender can make the system spend, tried through the running receiver and worker: a
model that will not stop sending, a flood of strangers, a trigger regex that backtracks without
end, and a queue that grows faster than the workers drain it."""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import fixture_json, signed, wait_until_idle
from tests.e2e import events_of, post, wait_for
from tests.factories import make_config
from tests.processes import Receiver, free_port

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"
# MAX_MESSAGES_PER_RUN's default, which the worker runs with.
MESSAGE_CAP = 10


def says(receiver: str, text: str, chat: str = CUSTOMER) -> httpx.Response:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=chat, Sender=chat)
    body["event"]["Message"] = {"conversation": text}
    return post(receiver, json.dumps(body).encode())


def ignored_because(reason: str) -> list:
    return [e for e in events_of("message.ignored") if e.payload.get("reason") == reason]


def test_a_model_calling_send_whatsapp_fifty_times_sends_at_most_the_cap(db, receiver, wuzapi, llm):
    make_config(wuzapi.url)

    assert says(receiver, "#flood 50").json()["status"] == "queued"
    wait_for(lambda: len(events_of("message.sent")) >= MESSAGE_CAP)
    wait_until_idle()

    assert [r["body"]["Body"] for r in wuzapi.sent()] == [
        f"Mensagem {n}" for n in range(1, MESSAGE_CAP + 1)]
    [capped] = events_of("reply.capped")
    assert capped.payload == {"limit": MESSAGE_CAP, "refused_sends": 50 - MESSAGE_CAP,
                              "joined_messages": 0}
    # The model was told, call by call, that the rest did not go out.
    results = [m["content"] for m in llm.chat_requests()[-1]["body"]["messages"]
               if m["role"] == "tool"]
    assert len(results) == 50
    assert results[:MESSAGE_CAP] == ["ok: message will be delivered to the customer"] * MESSAGE_CAP
    assert all(r.startswith("error: not sent") for r in results[MESSAGE_CAP:])


def test_three_times_the_limit_of_new_chats_in_a_minute_get_answers_only_up_to_it(
        db, receiver, wuzapi, llm):
    limit = 3
    make_config(wuzapi.url, options={"new_conversations_per_minute": limit})
    strangers = [f"55119{n:08d}@s.whatsapp.net" for n in range(3 * limit)]

    with ThreadPoolExecutor(max_workers=len(strangers)) as pool:
        answers = list(pool.map(lambda chat: says(receiver, "oi, quanto custa?", chat),
                                strangers))
    assert {a.json()["status"] for a in answers} == {"queued"}
    wait_for(lambda: len(ignored_because("too many new conversations")) == 2 * limit
             and len(events_of("message.sent")) == limit)
    wait_until_idle()

    answered = {r["body"]["Phone"] for r in wuzapi.sent()}
    assert len(answered) == len(wuzapi.sent()) == limit
    assert len(llm.chat_requests()) == limit
    turned_away = {e.conversation_id for e in ignored_because("too many new conversations")}
    assert len(turned_away) == 2 * limit


def test_a_catastrophic_trigger_regex_does_not_hold_up_the_worker(
        db, receiver, wuzapi, worker_process):
    make_config(wuzapi.url, options={
        "trigger": "keyword", "trigger_operator": "regex",
        "trigger_keywords": [r"(a+)+$", r"(a|aa)+$", r"\bpedido\b"]})

    started = time.monotonic()
    assert says(receiver, "a" * 40 + "!").json()["status"] == "queued"
    wait_for(lambda: bool(ignored_because("no trigger matched")), timeout=10)
    assert time.monotonic() - started < 5

    assert b"(a|aa)+$' gave up after" in worker_process.log_path.read_bytes()

    # The worker goes on answering (the unanswered message stays in the history).
    says(receiver, "quero fazer um pedido")
    replies = wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies[0]["body"]["Body"].endswith("! | quero fazer um pedido")


def test_readyz_says_degraded_while_webhooks_pile_up_in_the_queue(
        db, base_env, wuzapi, tmp_path):
    # A receiver of its own on the embedded broker, which no worker drains.
    env = {**os.environ, **base_env, "QUEUE_DEGRADED_DEPTH": "3",
           "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}
    receiver = Receiver(env, free_port(), tmp_path / "receiver.log")
    try:
        make_config(wuzapi.url)
        assert httpx.get(f"{receiver.url}/readyz", timeout=5).json() == {
            "status": "ok", "checks": {"database": "ok", "broker": "ok", "queue_depth": 0}}

        for n in range(3):
            body = fixture_json("message_text.json")
            body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
            raw = json.dumps(body).encode()
            assert httpx.post(f"{receiver.url}/webhooks/wuzapi", content=raw, timeout=10,
                              headers={"Content-Type": "application/json", **signed(raw)}
                              ).json()["status"] == "queued", n

        started = time.monotonic()
        ready = httpx.get(f"{receiver.url}/readyz", timeout=5)
        assert time.monotonic() - started < 1
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "degraded", "checks": {"database": "ok", "broker": "ok", "queue_depth": 3}}
    finally:
        receiver.stop()
