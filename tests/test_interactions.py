"""Conversation features where they meet, driven through the running receiver and a real
worker: read receipts and media in groups, the loop guard and split replies, voice notes and a
spent budget outside opening hours."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import fixture_json
from tests.e2e import events_of, post, wait_for, wait_for_event
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, DailyUsage, Message, utcnow

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

GROUP = "120363000000000001@g.us"
CUSTOMER = "5511900000001@s.whatsapp.net"
ZONE = "America/Sao_Paulo"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AWAY = "Estamos fechados agora; respondemos assim que abrirmos."
FALLBACK = "Nosso limite de hoje acabou."


def closed_now() -> dict[str, list[str]]:
    """Open one hour on the weekday three days from today: closed whenever the test runs."""
    today = utcnow().astimezone(ZoneInfo(ZONE)).weekday()
    return {DAYS[(today + 3) % 7]: ["10:00-11:00"]}


def envelope(name: str) -> dict[str, Any]:
    body = fixture_json(name)
    body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    return body


def send(receiver: str, body: dict[str, Any]) -> httpx.Response:
    response = post(receiver, json.dumps(body).encode())
    assert response.status_code == 200 and response.json()["status"] == "queued", response.text
    return response


def customer_says(receiver: str, text: str) -> None:
    body = envelope("message_text.json")
    body["event"]["Message"] = {"conversation": text}
    send(receiver, body)


def group_message(member: str, phone: str, name: str) -> dict[str, Any]:
    body = envelope("message_group.json")
    body["event"]["Info"].update(Sender=member, SenderAlt=f"{phone}@s.whatsapp.net",
                                 PushName=name)
    return body


def group_says(receiver: str, text: str, member: str, phone: str, name: str) -> str:
    body = group_message(member, phone, name)
    body["event"]["Message"] = {"conversation": text}
    send(receiver, body)
    return body["event"]["Info"]["ID"]


def group_voice_note(receiver: str, member: str, phone: str, name: str) -> None:
    """message_audio.json (inline base64) as a member of the group sends it."""
    audio = envelope("message_audio.json")
    body = group_message(member, phone, name)
    body["event"]["Info"].update(Type="media", MediaType="ptt")
    body["event"]["Message"] = audio["event"]["Message"]
    body["event"]["RawMessage"] = audio["event"]["RawMessage"]
    for key in ("base64", "mimeType", "fileName"):
        body[key] = audio[key]
    send(receiver, body)


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def test_group_messages_are_marked_read_with_the_member_who_sent_them(db, receiver, wuzapi):
    # WuzAPI's /chat/markread takes Id, Chat and Sender; WhatsApp needs the sender of a
    # group message.
    make_config(wuzapi.url, debounce_seconds=1.0,
                options={"groups": "on", "mark_read": True, "typing_indicator": False})
    first = group_says(receiver, "Bom dia!", "100000000000002@lid", "5511900000002", "Ana")
    second = group_says(receiver, "Abrem hoje?", "100000000000003@lid", "5511900000003", "Bruno")

    wuzapi.wait_for(lambda r: len(r) >= 1)
    wait_for(lambda: sum(len(s["body"]["Id"]) for s in wuzapi.signals) == 2)
    marked = {}
    for signal in wuzapi.signals:
        assert signal["path"] == "/chat/markread" and signal["status"] == 200
        assert signal["body"]["Chat"] == GROUP
        for message_id in signal["body"]["Id"]:
            marked[message_id] = signal["body"]["Sender"]
    assert marked == {first: "100000000000002@lid", second: "100000000000003@lid"}


def test_a_voice_note_in_a_group_is_transcribed_and_attributed(db, receiver, wuzapi, llm):
    # No system prompt: the group note is then the first message the model gets.
    make_config(wuzapi.url, system_prompt="", options={"groups": "on"})
    llm.transcript = "Vocês entregam no sábado?"
    group_voice_note(receiver, "100000000000002@lid", "5511900000002", "Ana")

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ['Resposta: ["Ana"] Vocês entregam no sábado?']
    messages = llm.chat_requests()[0]["body"]["messages"]
    assert messages[0]["role"] == "system" and "group chat" in messages[0]["content"]
    assert messages[1:] == [{"role": "user", "content": '["Ana"] Vocês entregam no sábado?'}]
    assert len(llm.transcriptions) == 1


def test_a_reply_split_into_paragraphs_is_one_reply_for_the_loop_guard(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"loop_guard_replies": 3, "loop_guard_minutes": 5})
    customer_says(receiver, "um\n\ndois\n\ntrês\n\nquatro")
    wuzapi.wait_for(lambda r: len(r) >= 4)

    customer_says(receiver, "e agora?")
    wuzapi.wait_for(lambda r: len(r) >= 5)
    assert replies(wuzapi)[-1] == "Resposta: e agora?"
    assert events_of("conversation.paused") == []

    # Three replies within the window: the guard does stop the fourth.
    customer_says(receiver, "mais uma")
    wuzapi.wait_for(lambda r: len(r) >= 6)
    customer_says(receiver, "e outra")
    wait_for(lambda: any(e.payload.get("reason") == "loop guard"
                         for e in events_of("message.ignored")))
    assert len(replies(wuzapi)) == 6


def test_a_voice_note_outside_opening_hours_gets_the_away_message_untranscribed(
    db, receiver, wuzapi, llm
):
    make_config(wuzapi.url, options={"opening_hours": closed_now(), "timezone": ZONE,
                                     "away_message": AWAY})
    send(receiver, envelope("message_audio.json"))

    wait_for_event("away.queued")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    wait_for(lambda: len(events_of("message.sent")) == 1)
    assert replies(wuzapi) == [AWAY]
    assert llm.requests == [] and llm.transcriptions == []
    with session_scope() as session:
        [row] = session.scalars(select(Message).where(Message.role == "customer")).all()
        # Not answered: its inline bytes are not kept in the history.
        assert row.media_type == "audio" and "base64" not in row.extra["media"]


def test_outside_opening_hours_a_spent_budget_sends_only_the_away_message(
    db, receiver, wuzapi, llm
):
    make_config(wuzapi.url, options={
        "opening_hours": closed_now(), "timezone": ZONE, "away_message": AWAY,
        "daily_token_budget": 0, "fallback_text": FALLBACK, "budget_action": "handoff"})
    customer_says(receiver, "oi")
    wait_for(lambda: len(events_of("message.sent")) == 1)
    customer_says(receiver, "tem alguém?")

    wait_for(lambda: len(events_of("message.ignored")) == 1)
    assert replies(wuzapi) == [AWAY]
    assert [e.payload["reason"] for e in events_of("message.ignored")] == [
        "outside opening hours"]
    # Closed, the budget is not what stops the bot: no handoff, no pause.
    assert events_of("budget.exceeded") == [] and events_of("handoff.requested") == []
    with session_scope() as session:
        assert session.scalars(select(Conversation)).one().status == "active"
    assert llm.requests == []


def test_a_voice_notes_transcription_counts_toward_the_cost_budget(db, receiver, wuzapi, llm):
    # The stand-in chat model has no price: what the day cost is the transcription alone.
    make_config(wuzapi.url, options={"daily_cost_budget": 0.0005, "fallback_text": FALLBACK})
    send(receiver, envelope("message_audio.json"))
    wuzapi.wait_for(lambda r: len(r) >= 1)
    [transcribed] = events_of("media.transcribed")
    assert transcribed.payload["cost"] > 0.0005  # whisper-1, 7 s
    with session_scope() as session:
        [usage] = session.scalars(select(DailyUsage)).all()
        assert usage.cost == pytest.approx(transcribed.payload["cost"])

    customer_says(receiver, "e então?")
    wait_for(lambda: len(wuzapi.sent()) >= 2)
    assert replies(wuzapi)[-1] == FALLBACK
    assert len(llm.chat_requests()) == 1


def business_types(receiver: str, text: str) -> None:
    body = envelope("message_from_me.json")
    body["event"]["Message"] = {"conversation": text}
    send(receiver, body)


def test_the_resume_keyword_is_not_part_of_what_the_model_reads(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"resume_keyword": "#bot"})
    business_types(receiver, "Oi, aqui é a Ana da loja")
    wait_for_event("conversation.paused")
    business_types(receiver, "#BOT")
    wait_for_event("conversation.resumed")

    customer_says(receiver, "e o frete?")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    history = [(m["role"], m["content"]) for m in llm.chat_requests()[0]["body"]["messages"]
               if m["role"] != "system"]
    assert history == [("assistant", "Oi, aqui é a Ana da loja"), ("user", "e o frete?")]


def test_a_silent_handoff_clears_typing(db, receiver, wuzapi, llm):
    make_config(wuzapi.url)  # typing_indicator on, no handoff_text
    customer_says(receiver, "quero falar com alguém #quiet-handoff")
    wait_for_event("handoff.requested")
    wait_for(lambda: len(wuzapi.signals) >= 2)

    assert wuzapi.sent() == []
    assert [(s["path"], s["body"]["State"], s["status"]) for s in wuzapi.signals] == [
        ("/chat/presence", "composing", 200), ("/chat/presence", "paused", 200)]
    assert wuzapi.signals[-1]["body"]["Phone"] == CUSTOMER


def test_in_a_group_the_loop_guard_counts_the_replies_to_each_member(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"groups": "on", "loop_guard_replies": 2})
    members = [("100000000000002@lid", "5511900000002", "Ana"),
               ("100000000000003@lid", "5511900000003", "Bruno"),
               ("100000000000004@lid", "5511900000004", "Carla")]
    for count, member in enumerate(members, start=1):
        group_says(receiver, f"pergunta {count}", *member)
        wuzapi.wait_for(lambda r, count=count: len(r) >= count)
    assert events_of("conversation.paused") == []

    # One member the bot keeps answering (another bot, say) does trip it.
    group_says(receiver, "de novo", *members[0])
    wuzapi.wait_for(lambda r: len(r) >= 4)
    group_says(receiver, "e de novo", *members[0])
    wait_for(lambda: any(e.payload.get("reason") == "loop guard"
                         for e in events_of("message.ignored")))
    assert len(wuzapi.sent()) == 4


def test_a_pause_that_ran_out_is_recorded_as_ended(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"human_pause_minutes": 10})
    business_types(receiver, "Oi, sou eu")
    wait_for_event("conversation.paused")
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        ended = utcnow() - timedelta(seconds=1)
        conversation.paused_until = ended  # ten minutes later, as far as the bot can tell

    customer_says(receiver, "ainda tem?")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    [resumed] = events_of("conversation.resumed")
    assert resumed.payload == {"reason": "human took over", "until": ended.isoformat(),
                               "actor": "expired"}
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert (conversation.status, conversation.paused_until) == ("active", None)
