"""Backlogs and pacing through the running receiver and a real worker, on PostgreSQL and on
SQLite: a message WhatsApp timestamped long ago is recorded and, by `stale_action`, left
alone, handed to a person or answered once; sends wait their turn in the outbox by the
instance's rate, the chat's minimum interval and the day's cap on new conversations, and a
paced send survives a worker's restart."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import fixture_json, running_worker, wait_until_idle
from tests.e2e import events_of, post, wait_for
from tests.factories import make_config
from tests.processes import Receiver, free_port
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun, Role, extra_of

pytestmark = pytest.mark.usefixtures("database")

ANA = "5511900000001@s.whatsapp.net"
BRUNO = "5511900000002@s.whatsapp.net"
CARLA = "5511900000003@s.whatsapp.net"
NOW = "now"


@contextmanager
def running_system(base_env, tmp_path_factory, *, idle: bool = True,  # type: ignore[no-untyped-def]
                   **worker_env: str) -> Iterator[str]:
    """A receiver and a worker on the test's database (PostgreSQL, or a fresh SQLite file);
    the worker's tasks finished before it stops, unless a send waits (`idle` False)."""
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        with running_worker(base_env, tmp_path_factory, name="pacing",
                            DATABASE_URL=env["DATABASE_URL"], **worker_env):
            yield receiver.url
            if idle:
                wait_until_idle()
    finally:
        receiver.stop()


def customer_says(receiver: str, text: str, *, chat: str = ANA,
                  typed: datetime | str | None = NOW) -> str:
    """Post a text as WuzAPI would; `typed` is its Info.Timestamp (now, a time, a raw string,
    or None: left out). Its WhatsApp id."""
    body = fixture_json("message_text.json")
    info = body["event"]["Info"]
    wa_id = f"3A{uuid.uuid4().hex[:18].upper()}"
    info.update(ID=wa_id, Chat=chat, Sender=chat)
    if typed is None:
        del info["Timestamp"]
    elif isinstance(typed, datetime):
        info["Timestamp"] = typed.isoformat()
    elif typed != NOW:
        info["Timestamp"] = typed
    body["event"]["Message"] = {"conversation": text}
    response = post(receiver, json.dumps(body).encode())
    assert response.json()["status"] == "queued", response.text
    return wa_id


def sent_to(wuzapi) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(Phone, Body) of each send: the chat's JID, as the reply is addressed."""
    return [(r["body"]["Phone"], r["body"]["Body"]) for r in wuzapi.sent()]


def reasons(type_: str) -> list[str]:
    return [e.payload.get("reason") for e in events_of(type_)]


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


# --- backlogs --------------------------------------------------------------------------------


def test_a_backlog_message_is_recorded_but_not_answered_and_a_fresh_one_is(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url)
    with running_system(base_env, tmp_path_factory) as receiver:
        old = customer_says(receiver, "oi, ainda estão abertos?", chat=ANA, typed=hours_ago(2))
        customer_says(receiver, "quero um orçamento", chat=BRUNO)
        wuzapi.wait_for(lambda sent: len(sent) >= 1)

    assert sent_to(wuzapi) == [(BRUNO, "Resposta: quero um orçamento")]
    assert reasons("message.ignored") == ["stale"]
    with session_scope() as session:
        stored = session.scalars(select(Message).where(Message.wa_message_id == old)).one()
        assert stored.content == "oi, ainda estão abertos?"  # kept in the history
        assert extra_of(stored).get("stale") is True
    # No model call for the backlog.
    assert ["oi, ainda" not in json.dumps(r["body"]) for r in llm.chat_requests()] == [True]


def test_a_message_with_no_or_an_unreadable_timestamp_counts_as_fresh(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url)
    with running_system(base_env, tmp_path_factory) as receiver:
        customer_says(receiver, "sem data", chat=ANA, typed=None)
        customer_says(receiver, "data estranha", chat=BRUNO, typed="ontem à tarde")
        customer_says(receiver, "sem fuso", chat=CARLA, typed="2020-01-01T10:00:00")
        wuzapi.wait_for(lambda sent: len(sent) >= 3)

    assert sorted(sent_to(wuzapi)) == [(ANA, "Resposta: sem data"),
                                       (BRUNO, "Resposta: data estranha"),
                                       (CARLA, "Resposta: sem fuso")]
    assert reasons("message.ignored") == []


def test_max_message_age_minutes_sets_what_counts_as_a_backlog(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"max_message_age_minutes": 180})
    with running_system(base_env, tmp_path_factory) as receiver:
        customer_says(receiver, "de duas horas atrás", chat=ANA, typed=hours_ago(2))
        customer_says(receiver, "de quatro horas atrás", chat=BRUNO, typed=hours_ago(4))
        wuzapi.wait_for(lambda sent: len(sent) >= 1)

    assert sent_to(wuzapi) == [(ANA, "Resposta: de duas horas atrás")]
    assert reasons("message.ignored") == ["stale"]


def test_with_stale_action_handoff_a_backlog_waits_for_a_person(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"stale_action": "handoff"})
    with running_system(base_env, tmp_path_factory) as receiver:
        customer_says(receiver, "primeira", typed=hours_ago(3))
        customer_says(receiver, "segunda", typed=hours_ago(2))
        wait_for(lambda: len(events_of("message.ignored")) == 2)

    assert wuzapi.sent() == []
    assert reasons("message.ignored") == ["stale", "stale"]
    # Paused once for the whole backlog, until an operator resumes it.
    assert reasons("handoff.requested") == ["stale"]
    [paused] = events_of("conversation.paused")
    assert paused.payload["until"] is None
    with session_scope() as session:
        assert session.scalars(select(Conversation.status)).one() == "paused"


def test_with_stale_action_answer_latest_a_backlog_gets_one_reply(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"stale_action": "answer_latest",
                                     "min_send_interval_seconds": None})
    with running_system(base_env, tmp_path_factory) as receiver:
        # Delivered out of order, as WuzAPI's goroutines do after a reconnect (each recorded
        # before the next is posted, so the order is the one written here).
        for count, (text, hours) in enumerate((("dois", 2), ("três", 1), ("um", 3)), start=1):
            customer_says(receiver, text, chat=ANA, typed=hours_ago(hours))
            wait_for(lambda count=count: len(events_of("message.received")) == count)
        customer_says(receiver, "só uma", chat=BRUNO, typed=hours_ago(5))
        wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=30)
        wait_until_idle()

    replies = dict(sent_to(wuzapi))
    assert len(wuzapi.sent()) == 2, sent_to(wuzapi)
    # One reply per conversation, to its newest message (with the rest of the backlog that
    # had landed in view); the older message that came after the newest is set aside.
    assert replies[ANA].startswith("Resposta: ") and "três" in replies[ANA]
    assert "um" not in replies[ANA].split()
    assert replies[BRUNO] == "Resposta: só uma"
    assert reasons("message.ignored") == ["stale"]


# --- pacing ----------------------------------------------------------------------------------


def sent_times() -> list[datetime]:
    with session_scope() as session:
        return list(session.scalars(
            select(Message.sent_at).where(Message.role == Role.ASSISTANT,
                                          Message.status == "sent").order_by(Message.sent_at)))


def test_sends_from_one_instance_are_spaced_by_send_rate_per_minute(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"send_rate_per_minute": 20})  # one every 3 s
    with running_system(base_env, tmp_path_factory) as receiver:
        for chat in (ANA, BRUNO, CARLA):
            customer_says(receiver, "oi", chat=chat)
        wuzapi.wait_for(lambda sent: len(sent) >= 3, timeout=30)

    assert sorted(sent_to(wuzapi)) == sorted((c, "Resposta: oi")
                                             for c in (ANA, BRUNO, CARLA))
    first, second, third = sent_times()
    assert (second - first).total_seconds() >= 2.8
    assert (third - second).total_seconds() >= 2.8
    paced = events_of("message.paced")
    assert paced and {e.payload["reason"] for e in paced} == {"rate"}
    # Up to one slot, give or take the few milliseconds between two workers' clocks.
    assert all(0 < e.payload["delay_seconds"] < 3.5 for e in paced), [e.payload for e in paced]
    with session_scope() as session:
        # Each reply sent once.
        assert session.scalars(select(Message.status).where(
            Message.role == Role.ASSISTANT)).all() == ["sent", "sent", "sent"]


def test_the_paragraphs_of_a_reply_are_min_send_interval_seconds_apart(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"min_send_interval_seconds": 2})
    with running_system(base_env, tmp_path_factory) as receiver:
        customer_says(receiver, "primeiro parágrafo\n\nsegundo\n\nterceiro")
        wuzapi.wait_for(lambda sent: len(sent) >= 3, timeout=30)

    # In order, each once.
    assert [body for _to, body in sent_to(wuzapi)] == [
        "Resposta: primeiro parágrafo", "segundo", "terceiro"]
    first, second, third = sent_times()
    assert (second - first).total_seconds() >= 1.8
    assert (third - second).total_seconds() >= 1.8
    assert reasons("message.paced") == ["interval", "interval"]


def test_the_bot_starts_no_more_than_daily_new_conversations_a_day(
    base_env, tmp_path_factory, wuzapi, llm
):
    # A backlog two days old answered with answer_latest: each reply opens a conversation in
    # WhatsApp's terms (the customer wrote nothing in the last 24 hours).
    make_config(wuzapi.url, options={"stale_action": "answer_latest",
                                     "daily_new_conversations": 1})
    # Stopped with the paced send still waiting: its wake-up task is always queued.
    with running_system(base_env, tmp_path_factory, idle=False) as receiver:
        customer_says(receiver, "pedido antigo", chat=ANA, typed=hours_ago(48))
        wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
        customer_says(receiver, "outro pedido antigo", chat=BRUNO, typed=hours_ago(50))
        wait_for(lambda: bool(events_of("message.paced")), timeout=30)
        # A customer who writes now is answered: a reply is not a new conversation.
        customer_says(receiver, "oi", chat=CARLA)
        wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=30)

    assert sent_to(wuzapi) == [(ANA, "Resposta: pedido antigo"),
                               (CARLA, "Resposta: oi")]
    [paced] = events_of("message.paced")
    assert paced.payload["reason"] == "daily_new_conversations"
    assert 0 < paced.payload["delay_seconds"] <= 24 * 3600
    with session_scope() as session:
        # Waiting for tomorrow in the outbox, not lost.
        waiting = session.scalars(select(Message).where(Message.status == "pending")).one()
        assert waiting.content == "Resposta: outro pedido antigo"
        run = session.get(ReplyRun, waiting.reply_run_id)
        assert run.next_attempt_at > datetime.now(UTC) + timedelta(seconds=1)


def test_a_paced_send_waits_in_the_outbox_through_a_worker_restart(
    base_env, tmp_path_factory, wuzapi, llm
):
    make_config(wuzapi.url, options={"send_rate_per_minute": 6})  # one every 10 s
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        with running_worker(base_env, tmp_path_factory, name="paced-1",
                            DATABASE_URL=env["DATABASE_URL"]):
            customer_says(receiver.url, "oi", chat=ANA)
            customer_says(receiver.url, "oi", chat=BRUNO)
            wait_for(lambda: bool(events_of("message.paced")), timeout=30)
        assert len(wuzapi.sent()) == 1
        with running_worker(base_env, tmp_path_factory, name="paced-2",
                            DATABASE_URL=env["DATABASE_URL"], SWEEP_INTERVAL_SECONDS="1",
                            SWEEP_GRACE_SECONDS="1"):
            wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=40)
            wait_until_idle()
    finally:
        receiver.stop()

    assert sorted(sent_to(wuzapi)) == [(ANA, "Resposta: oi"),
                                       (BRUNO, "Resposta: oi")]
    first, second = sent_times()
    assert (second - first).total_seconds() >= 9.5
