"""Personal data guarantees, tried the hard way: an erasure while a reply is being generated
(in this process on PostgreSQL and SQLite, and through a real worker), retention purges run by
several workers at once, and exports that must not leak one contact into another's."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import func, insert, select, text, update

from tests.conftest import fixture_bytes, running_worker, wait_until_idle
from tests.e2e import events_of, fresh, post, wait_for
from tests.factories import INSTANCE, make_config
from zapreply.actions import privacy
from zapreply.replies import inbound, leases, responder
from zapreply.storage.db import get_engine, session_scope
from zapreply.storage.models import (
    Conversation,
    DailyUsage,
    Event,
    Message,
    ReplyRun,
    WorkflowConfig,
    utcnow,
)

ANA = "5511900000001"


def receive(config_id: int, text: str, wa_id: str, phone: str = ANA) -> int:
    chat = f"{phone}@s.whatsapp.net"
    with session_scope() as session:
        recorded = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
            "wa_message_id": wa_id, "chat_jid": chat, "sender_jid": chat,
            "contact_phone": phone, "push_name": "Ana Cliente", "from_me": False,
            "timestamp": None, "text": text, "media_type": None,
        })
    return recorded.conversation_id


def every_row() -> str:
    """Every row of every table, as text: where a trace of a contact would show."""
    with session_scope() as session:
        rows = []
        for model in (WorkflowConfig, Conversation, ReplyRun, Message, Event, DailyUsage):
            for row in session.scalars(select(model)):
                rows.append({c.name: getattr(row, c.key) for c in model.__mapper__.columns})
    return json.dumps(rows, default=str, ensure_ascii=False)


def assert_nothing_left_of_ana(texts: tuple[str, ...] = ("CPF", "Resposta")) -> None:
    with session_scope() as session:
        assert session.scalars(select(Conversation)).all() == []
        assert session.scalars(select(Message)).all() == []
        assert session.scalars(select(ReplyRun)).all() == []
        assert session.scalars(select(Event.type)).all() == ["contact.erased"]
    left = every_row()
    for trace in (ANA, "Ana Cliente", "Cliente Teste Um", *texts):
        assert trace not in left, trace


def test_a_reply_being_generated_when_its_contact_is_erased_writes_and_sends_nothing(
    database, llm, wuzapi
):
    conversation_id = receive(make_config(wuzapi), "meu CPF é 123.456.789-00", "X1")
    llm.delay_seconds = 1.5
    outcome: dict[str, object] = {}

    def answer() -> None:
        try:
            outcome["finished"] = responder.answer_conversation(conversation_id, owner="test")
        except Exception as exc:  # noqa: BLE001 - what the run ended with is the result
            outcome["error"] = exc

    thread = threading.Thread(target=answer)
    thread.start()
    llm.wait_for(lambda requests: any(r["path"].endswith("/chat/completions")
                                      for r in requests))
    sends_before, signals_before = len(wuzapi.requests), len(wuzapi.signals)
    with session_scope() as session:
        counts = privacy.erase_contact(session, privacy.parse_contact(ANA), actor="test")
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert counts["conversations"] == 1 and counts["runs"] == 1
    assert llm.calls[0]["end"] is not None and llm.calls[0]["status"] == 200
    # Stopped by the fence, not by anything else going wrong.
    assert isinstance(outcome.get("error"), leases.LeaseLost), outcome
    assert wuzapi.requests[sends_before:] == [] and wuzapi.signals[signals_before:] == []
    assert wuzapi.sent() == []
    assert_nothing_left_of_ana()


def test_workers_purging_at_once_delete_each_expired_row_once_and_count_it_once(
    database, wuzapi
):
    config_id = make_config(wuzapi, options={"retention_days": 30})
    old, new = utcnow() - timedelta(days=31), utcnow()
    expired_messages = expired_events = 0
    with session_scope() as session:
        for n in range(20):
            stale = n < 10  # half the conversations hold only expired rows
            conversation = session.execute(insert(Conversation).values(
                instance=INSTANCE, chat_jid=f"55119000{n:05d}@s.whatsapp.net",
                contact_phone=f"55119000{n:05d}", workflow_config_id=config_id,
                status="active", lease_token=0, created_at=old,
                updated_at=old if stale else new,
            ).returning(Conversation.id)).scalar_one()
            for m in range(15):
                at = old if stale or m < 5 else new
                expired_messages += at is old
                session.execute(insert(Message).values(
                    conversation_id=conversation, instance=INSTANCE, role="customer",
                    content=f"texto {n}-{m}", wa_message_id=f"W{n}-{m}", extra={},
                    created_at=at))
                expired_events += at is old
                session.execute(insert(Event).values(
                    type="message.received", conversation_id=conversation,
                    payload={"wa_message_id": f"W{n}-{m}"}, created_at=at))
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def purge() -> None:
        barrier.wait()
        try:
            privacy.purge_expired(batch_size=7)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 20 * 15 - \
            expired_messages
        assert session.scalar(select(func.count()).where(Message.created_at < new)) == 0
        assert session.scalar(select(func.count()).select_from(Conversation)) == 10
        summaries = [e.payload for e in session.scalars(
            select(Event).where(Event.type == "retention.purged"))]
    assert sum(s["messages"] for s in summaries) == expired_messages
    assert sum(s["events"] for s in summaries) == expired_events
    assert sum(s["conversations"] for s in summaries) == 10


def test_a_number_that_contains_another_exports_and_erases_only_itself(database, wuzapi):
    config_id = make_config(wuzapi)
    receive(config_id, "sou a Ana", "P1", phone=ANA)
    receive(config_id, "número mais longo", "P2", phone=ANA + "2")
    receive(config_id, "número mais curto", "P3", phone=ANA[:-1])

    with session_scope() as session:
        data = privacy.export_contact(session, privacy.parse_contact(ANA))
    exported = json.dumps(data, ensure_ascii=False)
    assert "sou a Ana" in exported
    assert "mais longo" not in exported and "mais curto" not in exported

    with session_scope() as session:
        privacy.erase_contact(session, privacy.parse_contact(ANA), actor="test")
    with session_scope() as session:
        assert sorted(session.scalars(select(Message.content))) == [
            "número mais curto", "número mais longo"]


def test_wildcards_in_a_phone_are_refused_not_matched(client, admin_headers, db, wuzapi):
    receive(make_config(wuzapi), "oi", "L1")

    for raw in ("55119%", "5511_00000001", "%@s.whatsapp.net", "*"):
        assert client.delete(f"/api/contacts/{quote(raw)}",
                             headers=admin_headers).status_code == 400
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_retention_never_deletes_the_record_of_an_erasure(database, wuzapi):
    receive(make_config(wuzapi, options={"retention_days": 1}), "oi", "K1")
    with session_scope() as session:
        privacy.erase_contact(session, privacy.parse_contact(ANA), actor="test")
        session.execute(update(Event).values(created_at=utcnow() - timedelta(days=3650)))

    privacy.purge_expired()

    with session_scope() as session:
        assert session.scalars(select(Event.type)).all() == ["contact.erased"]


def test_an_erasure_that_deadlocks_with_a_reply_being_recorded_is_tried_again(db, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "Z1")
    with session_scope() as session:
        message_id = session.scalars(select(Message.id)).one()
    outcome: dict[str, object] = {}

    def erase() -> None:
        try:
            outcome["counts"] = privacy.erase(privacy.parse_contact(ANA), actor="test")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    # What a reply's last send does: its outbox row first, then the conversation. This side
    # waits long before looking for a deadlock, so the erasure is the one that finds it.
    with get_engine().connect() as send:
        send.execute(text("SET deadlock_timeout = '20s'"))
        send.execute(update(Message).where(Message.id == message_id).values(status="sent"))
        thread = threading.Thread(target=erase)
        thread.start()
        wait_for(lambda: waiting_on_a_lock() == 1, timeout=10)
        send.execute(update(Conversation).where(Conversation.id == conversation_id)
                     .values(lease_owner=None))
        send.commit()
    thread.join(timeout=30)

    assert outcome.get("counts") == {"conversations": 1, "messages": 1, "events": 1, "runs": 0,
                                     "group_messages": 0, "addresses": 0}, outcome
    assert_nothing_left_of_ana(texts=("oi",))


def waiting_on_a_lock() -> int:
    with get_engine().connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar()


def test_a_group_members_erasure_takes_their_messages_and_keeps_the_others(database, wuzapi):
    config_id = make_config(wuzapi, options={"groups": "on"})
    for wa_id, phone, words in (("G1", ANA, "Ana: minha senha é 1234"),
                                ("G2", "5511900000002", "Bruno: bom dia")):
        with session_scope() as session:
            inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
                "wa_message_id": wa_id, "chat_jid": "120363000000000001@g.us",
                "sender_jid": f"1000{phone[-8:]}@lid", "contact_phone": phone,
                "push_name": words.split(":")[0], "from_me": False, "is_group": True,
                "timestamp": None, "text": words, "media_type": None,
            })

    with session_scope() as session:
        counts = privacy.erase_contact(session, privacy.parse_contact(f"+{ANA}"), actor="test")

    assert counts["group_messages"] == 1 and counts["conversations"] == 0
    with session_scope() as session:
        assert session.scalars(select(Message.content)).all() == ["Bruno: bom dia"]
        assert session.scalars(select(Conversation.chat_jid)).all() == [
            "120363000000000001@g.us"]
    assert "senha" not in every_row() and ANA not in every_row()


def test_a_running_worker_purges_what_is_past_the_retention_on_its_own(
    db, base_env, tmp_path_factory, wuzapi
):
    config_id = make_config(wuzapi, options={"retention_days": 7})
    receive(config_id, "antiga", "T1")
    receive(config_id, "nova", "T2", phone="5511900000002")
    with session_scope() as session:
        session.execute(update(Message).where(Message.wa_message_id == "T1")
                        .values(created_at=utcnow() - timedelta(days=8)))

    with running_worker(base_env, tmp_path_factory, name="retention",
                        RETENTION_INTERVAL_SECONDS="1"):
        wait_for(lambda: bool(events_of("retention.purged")), timeout=30)

    with session_scope() as session:
        assert session.scalars(select(Message.content)).all() == ["nova"]
    [purged] = events_of("retention.purged")
    assert purged.payload["workflow_config_id"] == config_id
    assert purged.payload["messages"] == 1


# Last in the module: the worker it starts stays up until the module ends.


def test_an_erasure_during_a_real_workers_llm_call_leaves_nothing_and_sends_nothing_after(
    db, receiver, worker_process, client, admin_headers, llm, wuzapi
):
    make_config(wuzapi.url)
    llm.delay_seconds = 3.0

    response = post(receiver, fresh(fixture_bytes("message_text.raw.json")))
    assert response.json()["status"] == "queued"
    llm.wait_for(lambda requests: any(r["path"].endswith("/chat/completions")
                                      for r in requests), timeout=30)
    sends_before, signals_before = len(wuzapi.requests), len(wuzapi.signals)

    erased = client.delete(f"/api/contacts/{quote('+55 11 90000-0001')}", headers=admin_headers)

    assert erased.status_code == 200, erased.get_json()
    assert erased.get_json()["erased"]["conversations"] == 1
    wait_for(lambda: bool(llm.calls) and llm.calls[0]["end"] is not None, timeout=30)
    wait_until_idle()
    assert wuzapi.requests[sends_before:] == [] and wuzapi.signals[signals_before:] == []
    assert wuzapi.sent() == []
    assert_nothing_left_of_ana()
    assert "superseded" in worker_process.log_path.read_text()
