"""Group chats and opening hours, driven through the running receiver and a real worker.

Schedules are built around the current time in the config's timezone (a day three days away
is surely closed now; every day from 00:00 to 24:00 is surely open), so nothing depends on
when the tests run.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN, fixture_json
from tests.e2e import all_events, events_of, post, wait_for, wait_for_event
from tests.factories import make_config
from zapreply import cli
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, WorkflowConfig, utcnow

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

GROUP = "120363000000000001@g.us"
BOT_NUMBER = "5511900000099"
CUSTOMER = "5511900000001@s.whatsapp.net"
ZONE = "America/Sao_Paulo"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = {day: ["00:00-24:00"] for day in DAYS}
AWAY = "Estamos fechados agora; respondemos assim que abrirmos."


def closed_now() -> dict[str, list[str]]:
    """Open one hour on the weekday three days from today: closed whenever the test runs."""
    today = utcnow().astimezone(ZoneInfo(ZONE)).weekday()
    return {DAYS[(today + 3) % 7]: ["10:00-11:00"]}


def group_says(receiver: str, text: str, *, member: str = "100000000000002@lid",
               phone: str = "5511900000002", name: str = "Cliente Teste Dois",
               context: dict[str, Any] | None = None) -> httpx.Response:
    body = fixture_json("message_group.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Sender=member,
                                 SenderAlt=f"{phone}@s.whatsapp.net", PushName=name)
    body["event"]["Message"] = (
        {"extendedTextMessage": {"text": text, "contextInfo": context}} if context
        else {"conversation": text})
    return post(receiver, json.dumps(body).encode())


_typed = itertools.count()


def customer_says(receiver: str, text: str) -> None:
    body = fixture_json("message_text.json")
    # Typed one second apart: a burst reaches the model in this order whichever worker
    # thread records it first.
    typed = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=next(_typed))
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}",
                                 Timestamp=typed.isoformat())
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def ignored_reasons() -> list[str]:
    return [e.payload["reason"] for e in events_of("message.ignored")]


def turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["body"]["messages"] if m["role"] != "system"]


# Groups ---------------------------------------------------------------------------------------


def test_with_groups_off_the_receiver_drops_group_messages(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"groups": "off"})
    answer = group_says(receiver, "alguém aí?")
    assert answer.json() == {"status": "ignored", "reason": "group chat"}
    wait_for(lambda: ignored_reasons() == ["group chat"])
    with session_scope() as session:
        assert session.scalars(select(Message)).all() == []
    assert llm.requests == [] and wuzapi.sent() == []


def test_with_groups_on_the_group_is_answered_in_the_group(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, system_prompt="Atenda o grupo. Quem falou: {contact_name}.",
                options={"groups": "on"})
    assert group_says(receiver, "Bom dia! Qual o horário?").json()["status"] == "queued"
    wuzapi.wait_for(lambda r: len(r) >= 1)

    sent = wuzapi.sent()[0]["body"]
    assert sent["Phone"] == GROUP
    assert sent["Body"] == 'Resposta: ["Cliente Teste Dois"] Bom dia! Qual o horário?'
    system = llm.requests[0]["body"]["messages"][0]["content"]
    assert system.startswith('Atenda o grupo. Quem falou: "Cliente Teste Dois".\n\n')
    assert "group chat" in system and 'from "Cliente Teste Dois" (5511900000002)' in system

    # A second member: the model is told who said what.
    group_says(receiver, "Eu também quero saber", member="100000000000003@lid",
               phone="5511900000003", name="Bruno")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    assert turns(llm.requests[-1]) == [
        ("user", '["Cliente Teste Dois"] Bom dia! Qual o horário?'),
        ("assistant", 'Resposta: ["Cliente Teste Dois"] Bom dia! Qual o horário?'),
        ("user", '["Bruno"] Eu também quero saber'),
    ]
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        # The conversation is the group; each message keeps who wrote it.
        assert (conversation.chat_jid, conversation.contact_name, conversation.contact_phone) \
            == (GROUP, None, None)
        senders = [m.extra["sender_name"] for m in session.scalars(
            select(Message).where(Message.role == "customer").order_by(Message.id))]
        assert senders == ["Cliente Teste Dois", "Bruno"]


def test_in_mention_mode_only_what_is_addressed_to_the_bot_is_answered(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"groups": "mention", "bot_number": f"+{BOT_NUMBER}"})
    group_says(receiver, "Alguém vai no churrasco?", member="100000000000003@lid",
               phone="5511900000003", name="Bruno")
    wait_for(lambda: ignored_reasons() == ["not addressed to the bot"])

    group_says(receiver, "@5511900000099 vocês abrem sábado?", context={
        "mentionedJID": [f"{BOT_NUMBER}@s.whatsapp.net"]})
    wuzapi.wait_for(lambda r: len(r) >= 1)
    # Answered with the unaddressed message as context, attributed to whoever wrote it.
    assert turns(llm.requests[0]) == [
        ("user", '["Bruno"] Alguém vai no churrasco?'),
        ("user", '["Cliente Teste Dois"] @5511900000099 vocês abrem sábado?'),
    ]
    assert wuzapi.sent()[0]["body"]["Phone"] == GROUP
    assert len(llm.requests) == 1


def test_in_mention_mode_a_reply_to_the_bot_is_answered_without_a_bot_number(
    db, receiver, wuzapi, llm
):
    make_config(wuzapi.url, options={"groups": "mention"})
    # Replying to someone else's message, mentioning someone else: not for the bot.
    group_says(receiver, "concordo", context={
        "stanzaID": "3A0000000000000000AAAA", "participant": "5511900000003@s.whatsapp.net",
        "mentionedJID": ["5511900000003@s.whatsapp.net"]})
    wait_for(lambda: ignored_reasons() == ["not addressed to the bot"])

    # Put a reply of ours in the group (answered once when the bot was switched on).
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        session.add(Message(conversation_id=conversation.id, instance="loja-teste",
                            role="assistant", content="Abrimos às 9h.", status="sent", seq=0,
                            wa_message_id="3EB0OURREPLY0000000001",
                            provider_message_id="3EB0OURREPLY0000000001", sent_at=utcnow()))

    group_says(receiver, "e no domingo?", context={"stanzaID": "3EB0OURREPLY0000000001",
                                                   "participant": "100000000000099@lid"})
    wuzapi.wait_for(lambda r: len(r) >= 1)
    # The model also sees what was quoted (the stand-in answers with what it saw).
    assert replies(wuzapi) == [
        'Resposta: ["Cliente Teste Dois"] [replying to our message: "Abrimos às 9h."]\n'
        'e no domingo?']


def test_a_group_member_on_the_deny_list_is_not_answered_in_the_group(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"groups": "on", "deny_contacts": ["5511900000003"]})
    group_says(receiver, "sou o Bruno", member="100000000000003@lid", phone="5511900000003",
               name="Bruno")
    wait_for(lambda: ignored_reasons() == ["contact denied"])
    group_says(receiver, "sou a Ana")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ['Resposta: ["Bruno"] sou o Bruno | ["Cliente Teste Dois"] sou a Ana']


def test_in_a_group_each_member_has_their_own_rate_limit(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, debounce_seconds=1.0,
                options={"groups": "on", "rate_limit_per_minute": 1})
    for text in ("primeira do Bruno", "segunda do Bruno"):
        group_says(receiver, text, member="100000000000003@lid", phone="5511900000003",
                   name="Bruno")
    group_says(receiver, "só uma da Ana")
    wait_for(lambda: len(events_of("message.received")) == 3)
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert ignored_reasons() == ["rate limited"]
    with session_scope() as session:
        limited = session.get(Message, events_of("message.ignored")[0].payload["message_id"])
        assert limited.extra["sender_name"] == "Bruno"
    assert len(wuzapi.sent()) == 1 and "só uma da Ana" in replies(wuzapi)[0]


def test_groups_go_to_the_config_that_answers_them(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, system_prompt="Atendimento.")
    make_config(wuzapi.url, name="Grupos", system_prompt="Grupos.",
                options={"trigger": "fallback", "groups": "on"})
    assert group_says(receiver, "oi grupo").json()["status"] == "queued"
    customer_says(receiver, "oi direto")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    prompts = {r["body"]["messages"][-1]["content"]: r["body"]["messages"][0]["content"]
               for r in llm.requests}
    assert prompts["oi direto"] == "Atendimento."
    assert prompts['["Cliente Teste Dois"] oi grupo'].startswith("Grupos.\n\n")


# Opening hours --------------------------------------------------------------------------------


def test_outside_hours_the_away_message_goes_once_and_the_model_is_not_called(
    db, receiver, wuzapi, llm
):
    config_id = make_config(wuzapi.url, debounce_seconds=1.0, options={
        "opening_hours": closed_now(), "timezone": ZONE, "away_message": AWAY})
    for text in ("oi", "tem alguém?", "olá"):
        customer_says(receiver, text)
    wait_for_event("away.queued")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    customer_says(receiver, "alô?")
    wait_for(lambda: "outside opening hours" in ignored_reasons())

    assert replies(wuzapi) == [AWAY]
    assert llm.requests == []
    away = events_of("away.queued")
    assert len(away) == 1 and len(away[0].payload["wa_message_ids"]) == 3
    sent = events_of("message.sent")
    assert len(sent) == 1 and sent[0].run_id == away[0].run_id
    with session_scope() as session:
        row = session.scalars(select(Message).where(Message.role == "assistant")).one()
        assert row.extra == {"away": True} and row.wa_message_id == wuzapi.sent()[0]["body"]["Id"]

    # The business opens: the night's messages and the away message are in the history, and
    # they are answered together with the next message (not on their own at opening time).
    with session_scope() as session:
        config = session.get(WorkflowConfig, config_id)
        config.options = {**config.options, "opening_hours": ALWAYS_OPEN}
    customer_says(receiver, "abriu?")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    assert turns(llm.requests[0]) == [
        ("user", "oi"), ("user", "tem alguém?"), ("user", "olá"), ("assistant", AWAY),
        ("user", "alô?"), ("user", "abriu?")]
    assert replies(wuzapi)[1] == "Resposta: alô? | abriu?"


def test_a_new_closed_window_gets_the_away_message_again(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"opening_hours": closed_now(), "timezone": ZONE,
                                     "away_message": AWAY})
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    # As if that away message went out before the business last opened and closed again.
    with session_scope() as session:
        for row in session.scalars(select(Message)):
            row.created_at -= timedelta(days=8)
    customer_says(receiver, "oi de novo")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    assert replies(wuzapi) == [AWAY, AWAY]
    ids = [r["body"]["Id"] for r in wuzapi.sent()]
    assert ids[0] != ids[1]
    assert len(events_of("away.queued")) == 2 and llm.requests == []


def test_the_away_message_is_retried_as_the_same_message(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"opening_hours": closed_now(), "timezone": ZONE,
                                     "away_message": AWAY})
    wuzapi.failures.append(503)
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 2, timeout=30)

    attempts = [(r["status"], r["body"]["Body"], r["body"]["Id"]) for r in wuzapi.requests]
    assert [a[0] for a in attempts] == [503, 200]
    assert attempts[0][1:] == attempts[1][1:] == (AWAY, attempts[0][2])
    wait_for_event("message.sent")
    assert len(events_of("message.failed")) == 1 and len(events_of("away.queued")) == 1


def test_outside_hours_without_an_away_message_nothing_is_sent(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"opening_hours": closed_now(), "timezone": ZONE})
    customer_says(receiver, "oi")
    wait_for(lambda: ignored_reasons() == ["outside opening hours"])
    with session_scope() as session:
        assert session.scalars(select(Message.content)).all() == ["oi"]
    assert llm.requests == [] and wuzapi.sent() == [] and events_of("away.queued") == []


def test_outside_hours_answer_keeps_answering(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"opening_hours": closed_now(), "timezone": ZONE,
                                     "away_message": AWAY, "outside_hours": "answer"})
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: oi"]
    assert not [e for e in all_events() if e.type == "away.queued"]


def test_inside_hours_the_model_answers(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"opening_hours": ALWAYS_OPEN, "timezone": ZONE,
                                     "away_message": AWAY})
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: oi"]


# Validation through the admin API and the CLI -------------------------------------------------


def admin(receiver: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{receiver}/api{path}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


CONFIG = {"name": "Loja", "instance": "loja-teste", "model": "openai/stub-model",
          "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"}}


@pytest.mark.parametrize("options, message", [
    ({"groups": "always"}, "'groups' must be one of: off, on, mention"),
    ({"bot_number": "o robô"}, "bot_number"),
    ({"opening_hours": {"mon": ["9 às 18"]}}, "not an 'HH:MM-HH:MM' range"),
    ({"opening_hours": {"funday": ["09:00-18:00"]}}, "unknown day"),
    ({"opening_hours": {"mon": []}}, "never opens"),
    ({"outside_hours": "ignore"}, "'outside_hours' must be one of: away, answer"),
    ({"away_message": ["oi"]}, "wrong type"),
])
def test_the_admin_api_refuses_bad_group_and_hours_options(db, receiver, options, message):
    created = admin(receiver, "POST", "/workflow-configs", {**CONFIG, "options": options})
    assert created.status_code == 400 and message in created.json()["error"]

    good = admin(receiver, "POST", "/workflow-configs", {**CONFIG, "options": {
        "groups": "mention", "bot_number": BOT_NUMBER, "opening_hours": {"mon": ["09:00-18:00"]},
        "away_message": AWAY}})
    assert good.status_code == 201
    config_id = good.json()["id"]
    patched = admin(receiver, "PATCH", f"/workflow-configs/{config_id}", {"options": options})
    assert patched.status_code == 400 and message in patched.json()["error"]
    kept = admin(receiver, "GET", f"/workflow-configs/{config_id}").json()["options"]
    assert (kept["groups"], kept["opening_hours"], kept["outside_hours"]) == (
        "mention", {"mon": ["09:00-18:00"]}, "away")


def test_the_cli_refuses_a_bad_schedule(db, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**CONFIG, "options": {"opening_hours": {"mon": ["18:00"]}}}))
    assert cli.main(["config", "create", "--json", str(path)]) == 2
    assert "not an 'HH:MM-HH:MM' range" in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []
