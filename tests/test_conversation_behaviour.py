"""Per-config conversation behaviour, driven through the running receiver and a real worker:
human takeover and its resume keyword, sessions and the reset keyword, guards (input length,
rate limit, loop guard) and the system prompt's template variables."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import fixture_json
from tests.e2e import events_of, post, wait_for, wait_for_event
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, utcnow

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"


def customer_says(receiver: str, text: str, *, chat: str = CUSTOMER) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=chat, Sender=chat)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def business_types(receiver: str, text: str) -> None:
    body = fixture_json("message_from_me.json")
    body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def test_the_business_can_give_the_conversation_back_with_the_resume_keyword(db, receiver, wuzapi):
    make_config(wuzapi.url, options={"resume_keyword": "#Bot"})
    business_types(receiver, "Deixa comigo")
    wait_for_event("conversation.paused")

    business_types(receiver, "  #bot ")
    wait_for_event("conversation.resumed")
    customer_says(receiver, "e agora?")

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: e agora?"]
    resumed = events_of("conversation.resumed")[0].payload
    assert resumed["actor"] == "business"


def test_a_pause_from_the_business_phone_ends_by_itself(db, receiver, wuzapi):
    make_config(wuzapi.url, options={"human_pause_minutes": 10})
    business_types(receiver, "Oi, sou eu")
    wait_for_event("conversation.paused")
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.paused_until is not None
        # Ten minutes later, as far as the bot can tell:
        conversation.paused_until = utcnow() - timedelta(seconds=1)

    customer_says(receiver, "ainda tem?")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: ainda tem?"]


def test_the_reset_keyword_starts_a_fresh_context(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"reset_keyword": "recomeçar"})
    customer_says(receiver, "meu pedido é o 123")
    wuzapi.wait_for(lambda r: len(r) >= 1)

    customer_says(receiver, "RECOMECAR")
    wait_for_event("session.reset")
    customer_says(receiver, "oi de novo")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    assert replies(wuzapi) == ["Resposta: meu pedido é o 123", "Resposta: oi de novo"]
    last_request = llm.requests[-1]["body"]["messages"]
    assert [m["content"] for m in last_request if m["role"] != "system"] == ["oi de novo"]


def test_after_a_long_silence_the_model_sees_only_the_new_session(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"session_idle_hours": 12})
    customer_says(receiver, "mensagem antiga")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    with session_scope() as session:
        for message in session.scalars(select(Message)):
            message.created_at -= timedelta(days=2)

    customer_says(receiver, "mensagem nova")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    last_request = llm.requests[-1]["body"]["messages"]
    assert [m["content"] for m in last_request if m["role"] != "system"] == ["mensagem nova"]


def test_an_overlong_message_reaches_the_model_cut_to_the_limit(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"max_input_chars": 20})
    customer_says(receiver, "x" * 500)
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert llm.requests[0]["body"]["messages"][-1]["content"] == "x" * 20
    with session_scope() as session:
        assert session.scalars(select(Message).where(Message.role == "customer")).one() \
            .extra["truncated_from"] == 500


def test_a_contact_over_the_rate_limit_is_not_answered(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, debounce_seconds=1.0, options={"rate_limit_per_minute": 2})
    for index in range(4):
        customer_says(receiver, f"spam {index}")
    wait_for(lambda: len(events_of("message.received")) == 4)
    wuzapi.wait_for(lambda r: len(r) >= 1)

    # The worker records the four concurrently, so which two come first is theirs to race:
    # the first two recorded are answered together, the other two are set aside.
    [reply] = replies(wuzapi)
    answered = reply.removeprefix("Resposta: ").split(" | ")
    assert len(answered) == 2 and set(answered) < {f"spam {i}" for i in range(4)}
    limited = [e for e in events_of("message.ignored") if e.payload["reason"] == "rate limited"]
    with session_scope() as session:
        texts = {m.id: m.content for m in session.scalars(select(Message))}
    assert sorted(texts[e.payload["message_id"]] for e in limited) == sorted(
        {f"spam {i}" for i in range(4)} - set(answered))


def test_the_loop_guard_pauses_a_conversation_that_gets_too_many_replies(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"loop_guard_replies": 2, "loop_guard_minutes": 5})
    for index in range(2):
        customer_says(receiver, f"bot diz {index}")
        wuzapi.wait_for(lambda r, n=index: len(r) >= n + 1)
    customer_says(receiver, "bot diz 2")

    wait_for(lambda: any(e.payload.get("reason") == "loop guard" for e in events_of("message.ignored")))
    assert len(replies(wuzapi)) == 2
    paused = events_of("conversation.paused")[0].payload
    assert paused["reason"] == "loop guard" and paused["until"] is None


def test_the_system_prompt_knows_the_customer_and_the_time(db, receiver, wuzapi, llm):
    make_config(
        wuzapi.url,
        system_prompt="Cliente: {contact_name} ({contact_phone}). Hoje: {date}. JSON: {\"a\": 1}",
        options={"timezone": "America/Sao_Paulo"},
    )
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 1)

    system = llm.requests[0]["body"]["messages"][0]["content"]
    from zoneinfo import ZoneInfo

    today = utcnow().astimezone(ZoneInfo("America/Sao_Paulo")).date().isoformat()
    assert system == f'Cliente: "Cliente Teste Um" (5511900000001). Hoje: {today}. JSON: {{"a": 1}}'


def test_it_shows_typing_splits_paragraphs_and_marks_messages_read(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"mark_read": True, "typing_ms_per_char": 1,
                                     "typing_max_seconds": 0.05})
    customer_says(receiver, "primeiro parágrafo\n\nsegundo parágrafo")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    assert replies(wuzapi) == ["Resposta: primeiro parágrafo", "segundo parágrafo"]
    signals = [(s["path"], s["body"].get("State")) for s in wuzapi.signals]
    assert signals[0] == ("/chat/markread", None)
    # "typing…" before the answer and before each message (the per-character pause); a sent
    # message clears it in WhatsApp.
    assert signals[1:] == [("/chat/presence", "composing")] * 3
    read = wuzapi.signals[0]["body"]
    # WuzAPI's /chat/markread: Id (a list) and Chat; Sender only for a group's messages.
    assert read["Chat"] == CUSTOMER and len(read["Id"]) == 1 and "Sender" not in read
    assert all(s["status"] == 200 for s in wuzapi.signals)


def test_typing_and_splitting_can_be_turned_off(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"typing_indicator": False, "split_paragraphs": False})
    customer_says(receiver, "um\n\ndois")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: um\n\ndois"]
    assert wuzapi.signals == []


def other_config(wuzapi, **options) -> None:  # type: ignore[no-untyped-def]
    make_config(wuzapi.url, name="Outro", system_prompt="Outro fluxo.", options=options)


def test_a_keyword_config_starts_on_its_keyword_and_the_fallback_takes_the_rest(
    db, receiver, wuzapi, llm
):
    make_config(wuzapi.url, system_prompt="Fluxo de pedidos.", options={
        "trigger": "keyword", "trigger_operator": "starts_with", "trigger_keywords": ["pedido"]})
    other_config(wuzapi, trigger="fallback")

    customer_says(receiver, "Pedído 42, cadê?", chat="5511900000011@s.whatsapp.net")
    customer_says(receiver, "bom dia", chat="5511900000012@s.whatsapp.net")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    prompts = {r["body"]["messages"][-1]["content"]: r["body"]["messages"][0]["content"]
               for r in llm.requests}
    assert prompts == {"Pedído 42, cadê?": "Fluxo de pedidos.", "bom dia": "Outro fluxo."}


def test_a_conversation_stays_with_the_config_that_answered_it(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, system_prompt="Fluxo de pedidos.", options={
        "trigger": "keyword", "trigger_operator": "regex", "trigger_keywords": [r"^pedido \d+"]})
    other_config(wuzapi, trigger="fallback")
    customer_says(receiver, "pedido 7")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    customer_says(receiver, "e a entrega?")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    assert [r["body"]["messages"][0]["content"] for r in llm.requests] == [
        "Fluxo de pedidos.", "Fluxo de pedidos."]


def test_a_message_no_trigger_wants_is_not_answered(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"trigger": "keyword", "trigger_keywords": ["suporte"]})
    customer_says(receiver, "oi")
    wait_for(lambda: any(e.payload.get("reason") == "no trigger matched"
                         for e in events_of("message.ignored")))
    assert llm.requests == [] and wuzapi.sent() == []


def test_deny_and_allow_lists_decide_which_contacts_are_answered(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"allow_contacts": ["+55 (11) 90000-0001", "5511900000002"],
                                     "deny_contacts": ["5511900000002@s.whatsapp.net"]})
    customer_says(receiver, "permitido", chat="5511900000001@s.whatsapp.net")
    customer_says(receiver, "bloqueado", chat="5511900000002@s.whatsapp.net")
    customer_says(receiver, "desconhecido", chat="5511900000003@s.whatsapp.net")
    wait_for(lambda: len([e for e in events_of("message.ignored")
                          if e.payload.get("reason", "").startswith("contact")]) == 2)
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: permitido"]
    reasons = sorted(e.payload["reason"] for e in events_of("message.ignored"))
    assert reasons == ["contact denied", "contact not allowed"]
