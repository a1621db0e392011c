"""The worker's inbound task called in this process (no broker round trip for it), on both
databases: what it records and answers, and that a message is never lost with a failed plan."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

import worker.replies as worker_replies
from tests.conftest import migrated_sqlite
from tests.factories import INSTANCE, make_config
from tests.zapreply.replies.test_responder import event_types, run_of
from zapreply.replies import leases, plan, responder
from zapreply.runtime import Runtime
from zapreply.settings import get_settings, load
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message

CHAT = "5511900000007@s.whatsapp.net"


def message(wa_id: str, text: str = "oi") -> dict[str, Any]:
    return {"wa_message_id": wa_id, "chat_jid": CHAT, "sender_jid": CHAT,
            "contact_phone": CHAT.split("@")[0], "push_name": "Cliente", "from_me": False,
            "timestamp": None, "text": text, "media_type": None}


@pytest.fixture
def tasks(database, monkeypatch):  # type: ignore[no-untyped-def]
    """The worker's task modules, on a worker runtime built from the test's settings and
    database (the worker builds its own from the environment)."""
    import worker.inbound
    from worker.app import app

    runtime = Runtime.build(get_settings(), pre_ping=False)
    monkeypatch.setattr(app, "runtime", runtime)
    yield worker.inbound
    runtime.database.dispose()


def test_a_message_answered_at_once_is_recorded_answered_and_its_lease_given_up(
        database, tasks, wuzapi):
    config_id = make_config(wuzapi)

    result = tasks.handle_inbound(config_id, INSTANCE, message("T1"))

    assert result == "answered 1"
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi"]
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.lease_owner is None and conversation.lease_expires_at is None
        rows = session.scalars(select(Message).order_by(Message.id)).all()
    run = run_of(conversation.id)
    assert run.status == "sent"
    # The customer's message is bound to the run that answered it, and the reply is marked
    # sent with WuzAPI's id for it.
    assert [(m.role, m.content, m.reply_run_id, m.status) for m in rows] == [
        ("customer", "oi", run.id, None), ("assistant", "Resposta: oi", run.id, "sent")]
    assert rows[1].provider_message_id
    assert event_types(conversation.id) == ["message.received", "llm.completed", "message.sent"]


def test_a_failed_plan_keeps_the_message_and_frees_the_lease(database, tasks, wuzapi,
                                                            monkeypatch):
    config_id = make_config(wuzapi)

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug in planning")

    with monkeypatch.context() as patched, \
            pytest.raises(RuntimeError, match="a bug in planning"):
        patched.setattr(plan, "plan", broken)
        tasks.handle_inbound(config_id, INSTANCE, message("T2", "quero saber o preço"))

    with session_scope() as session:
        kept = session.scalars(select(Message)).all()
        assert [(m.role, m.content, m.wa_message_id) for m in kept] == [
            ("customer", "quero saber o preço", "T2")]
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.lease_expires_at is None
    assert event_types(conversation.id) == ["message.received"]
    assert wuzapi.sent() == []

    # Once planning works again, the kept message is answered.
    assert responder.answer_conversation(conversation.id, owner="test") == 1
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: quero saber o preço"]


def test_a_conversation_another_worker_holds_is_recorded_and_answered_later(
    database, tasks, wuzapi, monkeypatch
):
    config_id = make_config(wuzapi)
    tasks.handle_inbound(config_id, INSTANCE, message("T3"))  # the conversation exists
    with session_scope() as session:
        conversation_id = session.scalars(select(Conversation.id)).one()
        assert leases.claim_and_load(session, conversation_id, "someone else", 30) is not None
    later: list[tuple[Any, ...]] = []
    monkeypatch.setattr(worker_replies.reply, "apply_async",
                        lambda args, countdown: later.append((args, countdown)))

    result = tasks.handle_inbound(config_id, INSTANCE, message("T4", "ainda aí?"))

    assert result == "deferred"
    assert [args for args, _ in later] == [[conversation_id]]
    with session_scope() as session:
        texts = session.scalars(select(Message.content).where(Message.role == "customer")
                                .order_by(Message.id)).all()
        holder = session.get(Conversation, conversation_id).lease_owner
    assert texts == ["oi", "ainda aí?"]
    assert holder == "someone else"  # the claim that failed changed nothing
    assert len(wuzapi.sent()) == 1  # only the first message's reply


def test_a_task_runs_on_its_apps_runtime_not_on_the_processs(db, base_env, tmp_path,
                                                             monkeypatch):
    import worker.inbound
    from worker.app import app

    env = migrated_sqlite(tmp_path / "worker.db", base_env)
    runtime = Runtime.build(load(env), pre_ping=False)
    monkeypatch.setattr(app, "runtime", runtime)
    try:
        worker.inbound.record_ignored("loja", "group chat", "W1", None)

        with runtime.bound(), session_scope() as session:
            assert session.scalars(select(Event.type)).all() == ["message.ignored"]
        with session_scope() as session:
            assert session.scalars(select(Event.type)).all() == []
    finally:
        runtime.database.dispose()
