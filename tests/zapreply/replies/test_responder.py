"""The responder, called directly (no Celery): runs, retries, fencing, resume, replay, sweeping.
The LLM and WuzAPI are the local stand-ins, reached over HTTP by litellm and httpx."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.factories import INSTANCE, make_config
from zapreply import settings as settings_module
from zapreply.actions import replay
from zapreply.llm import tools
from zapreply.replies import generate, inbound, leases, responder, sweeper
from zapreply.rules import conversations
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, utcnow


@pytest.fixture
def database_env() -> dict[str, str]:
    """Retries without waiting out real backoffs."""
    return {"RETRY_BASE_SECONDS": "0.01", "RETRY_MAX_SECONDS": "0.05",
            "LLM_MAX_ATTEMPTS": "3", "SEND_MAX_ATTEMPTS": "3"}


@pytest.fixture
def fast_retries(database: str) -> str:
    """The reply steps on both databases (tests/conftest.py), with fast retries."""
    return database


def receive(config_id: int, text: str, wa_id: str, chat: str = "5511900000001@s.whatsapp.net") -> int:
    with session_scope() as session:
        recorded = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
            "wa_message_id": wa_id, "chat_jid": chat, "sender_jid": chat,
            "contact_phone": chat.split("@")[0], "push_name": "Cliente", "from_me": False,
            "timestamp": None, "text": text, "media_type": None,
        })
    return recorded.conversation_id


def answer(conversation_id: int) -> int:
    return responder.answer_conversation(conversation_id, owner="test")


def fail_retryably(conversation_id: int, *, times: int) -> None:
    """Attempts that fail in a way a retry can fix, without waiting out each backoff."""
    for _ in range(times):
        with pytest.raises(responder.RetryLater):
            answer(conversation_id)
        with session_scope() as session:
            session.get(ReplyRun, run_of(conversation_id).id).next_attempt_at = None


def run_of(conversation_id: int) -> ReplyRun:
    with session_scope() as session:
        return session.scalars(select(ReplyRun).where(
            ReplyRun.conversation_id == conversation_id).order_by(ReplyRun.id.desc())).first()


def event_types(conversation_id: int) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Event.type).where(
            Event.conversation_id == conversation_id).order_by(Event.id)))


def test_it_answers_a_burst_in_one_run(fast_retries, llm, wuzapi):
    config_id = make_config(wuzapi)
    receive(config_id, "oi", "A1")
    conversation_id = receive(config_id, "tudo bem?", "A2")

    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: oi | tudo bem?"]
    assert run_of(conversation_id).status == "sent"
    assert answer(conversation_id) == 0  # nothing left: no second reply


def test_the_last_send_records_the_row_its_event_the_closed_run_and_a_free_lease(
    fast_retries, llm, wuzapi
):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "oi", "L1")

    assert answer(conversation_id) == 1

    with session_scope() as session:
        reply = session.scalars(select(Message).where(
            Message.conversation_id == conversation_id, Message.role == "assistant")).one()
        assert reply.status == "sent" and reply.sent_at is not None
        assert reply.provider_message_id == wuzapi.sent()[0]["body"]["Id"]
        sent = session.scalars(select(Event).where(
            Event.conversation_id == conversation_id, Event.type == "message.sent")).one()
        assert sent.run_id == reply.reply_run_id
        assert sent.payload == {"message_id": reply.id,
                                "provider_message_id": reply.provider_message_id}
        run = session.get(ReplyRun, reply.reply_run_id)
        assert run.status == "sent" and run.finished_at is not None
        conversation = session.get(Conversation, conversation_id)
        assert conversation.lease_owner is None and conversation.lease_expires_at is None
    assert event_types(conversation_id) == ["message.received", "llm.completed", "message.sent"]
    with session_scope() as session:
        completed = session.scalars(select(Event).where(
            Event.conversation_id == conversation_id, Event.type == "llm.completed")).one()
    assert completed.run_id == reply.reply_run_id
    assert completed.payload["round"] == 0 and completed.payload["tool_calls"] == []
    assert completed.payload["prompt_tokens"] > 0 and completed.payload["latency_ms"] >= 0


def test_a_reply_in_paragraphs_is_sent_in_order_and_closed_once(fast_retries, llm, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "um\n\ndois\n\ntrês", "P1")

    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: um", "dois", "três"]
    with session_scope() as session:
        statuses = session.scalars(select(Message.status).where(
            Message.conversation_id == conversation_id, Message.role == "assistant")
            .order_by(Message.seq)).all()
    assert statuses == ["sent", "sent", "sent"]
    assert event_types(conversation_id).count("message.sent") == 3
    assert run_of(conversation_id).status == "sent"
    assert answer(conversation_id) == 0


def test_a_reply_longer_than_the_message_cap_ends_in_one_message_holding_the_rest(
        fast_retries, base_env, llm, wuzapi):
    settings_module.override(settings_module.load({**base_env, "MAX_MESSAGES_PER_RUN": "3"}))
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "um\n\ndois\n\ntrês\n\nquatro\n\ncinco", "P2")

    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == [
        "Resposta: um", "dois", "três\n\nquatro\n\ncinco"]
    with session_scope() as session:
        capped = session.scalars(select(Event).where(Event.type == "reply.capped")).one()
    assert capped.payload == {"limit": 3, "refused_sends": 0, "joined_messages": 3}


def test_send_whatsapp_past_the_cap_tells_the_model_it_was_not_sent():
    effects = tools.Effects(max_messages=2)
    results = [tools.execute("send_whatsapp", json.dumps({"message": f"m{n}"}), effects)
               for n in range(4)]

    assert results[:2] == ["ok: message will be delivered to the customer"] * 2
    assert all(r.startswith("error: not sent; one reply may send at most 2") for r in results[2:])
    assert effects.messages == ["m0", "m1"]
    assert effects.refused_messages == 2


def test_a_transient_llm_failure_backs_off_then_succeeds(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "B1")
    llm.fail_status = 503

    with pytest.raises(responder.RetryLater):
        answer(conversation_id)

    run = run_of(conversation_id)
    assert run.status == "running" and run.attempts == 1
    assert run.next_attempt_at is not None
    llm.fail_status = None
    # The backoff is durable: a task arriving early waits instead of hammering the LLM.
    with session_scope() as session:
        session.get(ReplyRun, run.id).next_attempt_at = utcnow() + timedelta(seconds=60)
    with pytest.raises(responder.Waiting):
        answer(conversation_id)
    with session_scope() as session:
        session.get(ReplyRun, run.id).next_attempt_at = utcnow()
    assert answer(conversation_id) == 1
    assert len(wuzapi.sent()) == 1
    assert event_types(conversation_id).count("llm.failed") == 1


def test_when_llm_retries_run_out_the_customer_gets_the_fallback_not_the_error(
    fast_retries, llm, wuzapi
):
    conversation_id = receive(make_config(wuzapi, options={"fallback_text": "Já te respondemos!"}), "oi", "C1")
    llm.fail_status = 500
    fail_retryably(conversation_id, times=2)

    answer(conversation_id)

    run = run_of(conversation_id)
    assert run.status == "failed" and run.attempts == 3
    assert "500" in run.error
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Já te respondemos!"]
    types = event_types(conversation_id)
    assert types.count("llm.failed") == 3 and "run.failed" in types


def test_a_permanent_llm_error_fails_at_once(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "C2")
    llm.fail_status = 400

    answer(conversation_id)

    assert run_of(conversation_id).status == "failed"
    assert len(llm.requests) == 1
    assert wuzapi.sent() == []  # no fallback configured: silence, but recorded
    assert "run.failed" in event_types(conversation_id)


def test_a_failed_run_can_be_replayed_once_the_llm_is_back(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi, options={"fallback_text": "Um instante."}), "oi", "D1")
    llm.fail_status = 400
    answer(conversation_id)
    failed = run_of(conversation_id)
    llm.fail_status = None

    with session_scope() as session:
        replay.reopen_run(session, failed.id, actor="test")
    assert answer(conversation_id) == 1

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Um instante.", "Resposta: oi"]
    ids = [r["body"]["Id"] for r in wuzapi.sent()]
    assert len(set(ids)) == 2
    assert run_of(conversation_id).status == "sent"
    with session_scope() as session, pytest.raises(replay.CannotReplay):
        replay.reopen_run(session, failed.id, actor="test")


def test_send_5xx_is_retried_with_the_same_message_id(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "E1")
    wuzapi.failures.extend([500, 502])
    fail_retryably(conversation_id, times=2)
    answer(conversation_id)

    attempts = wuzapi.requests
    assert [a["status"] for a in attempts] == [500, 502, 200]
    assert len({a["body"]["Id"] for a in attempts}) == 1
    assert len(llm.requests) == 1  # the reply was stored once, re-sent, never regenerated


def test_send_4xx_is_permanent_and_not_retried(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "E2")
    wuzapi.failures.append(400)

    answer(conversation_id)

    assert len(wuzapi.requests) == 1
    assert run_of(conversation_id).status == "failed"
    with session_scope() as session:
        failed = session.scalars(select(Event).where(Event.type == "message.failed")).one()
        assert failed.payload["permanent"] is True


def test_a_conversation_held_by_another_worker_is_busy(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "F1")
    with session_scope() as session:
        assert leases.claim_conversation(session, conversation_id, "other", 30) is not None

    with pytest.raises(responder.Busy):
        answer(conversation_id)
    assert llm.requests == []


def test_a_holder_whose_lease_was_taken_over_cannot_write(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "F2")
    with session_scope() as session:
        token = leases.claim_conversation(session, conversation_id, "slow", 30)
        session.get(Conversation, conversation_id).lease_expires_at = utcnow()
    with session_scope() as session:
        assert leases.claim_conversation(session, conversation_id, "new", 30) == token + 1
    with session_scope() as session, pytest.raises(leases.LeaseLost):
        leases.fence(session, conversation_id, token, 30)


def test_a_reply_whose_lease_was_taken_over_during_the_llm_call_is_not_stored(
    fast_retries, llm, wuzapi, monkeypatch
):
    conversation_id = receive(make_config(wuzapi), "oi", "F3")
    ask_the_model = generate.generate

    def then_taken_over(*args, **kwargs):  # type: ignore[no-untyped-def]
        draft = ask_the_model(*args, **kwargs)
        # The lease ran out while the model answered, and another worker claimed it.
        with session_scope() as session:
            session.get(Conversation, conversation_id).lease_expires_at = utcnow()
        with session_scope() as session:
            assert leases.claim_conversation(session, conversation_id, "new", 30) is not None
        return draft

    monkeypatch.setattr(generate, "generate", then_taken_over)
    with pytest.raises(leases.LeaseLost):
        answer(conversation_id)

    assert len(llm.requests) == 1 and wuzapi.sent() == []
    with session_scope() as session:
        assert session.scalars(select(Message.role)).all() == ["customer"]
        assert session.get(Conversation, conversation_id).lease_owner == "new"
    assert "llm.completed" not in event_types(conversation_id)


def test_a_run_left_with_a_pending_reply_is_resumed_without_asking_the_llm_again(
    fast_retries, llm, wuzapi
):
    conversation_id = receive(make_config(wuzapi), "oi", "G1")
    # As a worker killed between storing the reply and sending it leaves things.
    with session_scope() as session:
        config_id = session.get(Conversation, conversation_id).workflow_config_id
        run = ReplyRun(conversation_id=conversation_id, workflow_config_id=config_id,
                       status="running", attempts=0)
        session.add(run)
        session.flush()
        for message in session.scalars(select(Message).where(Message.role == "customer")):
            message.reply_run_id = run.id
        session.add(Message(
            conversation_id=conversation_id, instance=INSTANCE, role="assistant",
            content="Resposta guardada", reply_run_id=run.id, status="pending", seq=0,
            wa_message_id=responder.outbound_message_id(INSTANCE, run.id, 0), extra={},
        ))

    assert answer(conversation_id) == 1

    assert llm.requests == []
    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta guardada"]
    assert wuzapi.sent()[0]["body"]["Id"] == responder.outbound_message_id(INSTANCE, run.id, 0)


def test_the_sweeper_finds_work_nobody_holds(fast_retries, llm, wuzapi):
    config_id = make_config(wuzapi)
    fresh = receive(config_id, "agora", "H1", chat="5511900000002@s.whatsapp.net")
    old = receive(config_id, "antes", "H2", chat="5511900000003@s.whatsapp.net")
    held = receive(config_id, "preso", "H3", chat="5511900000004@s.whatsapp.net")
    with session_scope() as session:
        for message in session.scalars(select(Message).where(Message.wa_message_id.in_(["H2", "H3"]))):
            message.created_at = utcnow() - timedelta(minutes=5)
        leases.claim_conversation(session, held, "alive", 60)

    with session_scope() as session:
        found = sweeper.stranded_conversations(session, utcnow(), grace_seconds=30)

    assert found == [old]
    assert fresh not in found


def test_the_lease_keeper_renews_what_this_process_holds(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "K1")
    with session_scope() as session:
        token = leases.claim_conversation(session, conversation_id, "me", 30)
        session.get(Conversation, conversation_id).lease_expires_at = utcnow() + timedelta(seconds=1)
    keeper = leases.LeaseKeeper()
    keeper._held[conversation_id] = token  # no thread: renew once, by hand

    assert keeper.renew_all() == 1

    with session_scope() as session:
        expires = session.get(Conversation, conversation_id).lease_expires_at
    assert expires > utcnow() + timedelta(seconds=20)


def test_a_burst_reaches_the_model_in_the_order_it_was_typed(fast_retries, llm, wuzapi):
    config_id = make_config(wuzapi)
    # Recorded out of order, as concurrent deliveries can be; WhatsApp's timestamps tell.
    typed = datetime.now(UTC).replace(microsecond=0)
    for wa_id, text, second in (("T3", "três", 3), ("T1", "um", 1), ("T2", "dois", 2)):
        with session_scope() as session:
            conversation_id = inbound.record_inbound(
                session, config_id=config_id, instance=INSTANCE, message={
                    "wa_message_id": wa_id, "chat_jid": "5511900000001@s.whatsapp.net",
                    "sender_jid": "5511900000001@s.whatsapp.net", "contact_phone": "5511900000001",
                    "push_name": "Cliente", "from_me": False, "media_type": None, "text": text,
                    "timestamp": (typed + timedelta(seconds=second)).isoformat(),
                }).conversation_id

    answer(conversation_id)

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: um | dois | três"]


def test_a_message_that_arrives_mid_reply_is_answered_next_with_that_reply_in_its_history(
    fast_retries, llm, wuzapi
):
    import threading

    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "primeira", "M1")
    llm.delay_seconds = 0.5
    late = threading.Timer(0.2, receive, args=(config_id, "segunda", "M2"))
    late.start()

    assert answer(conversation_id) == 2
    late.join()

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: primeira", "Resposta: segunda"]
    second_request = [m["content"] for m in llm.requests[1]["body"]["messages"]]
    assert second_request[1:] == ["primeira", "Resposta: primeira", "segunda"]


def test_the_sweeper_finds_a_closed_runs_text_left_unsent(fast_retries, llm, wuzapi):
    # As a worker killed between storing a spent budget's fallback text and sending it leaves
    # things: the run is already closed (skipped), so no open run points at the text.
    conversation_id = receive(make_config(wuzapi), "oi", "S1")
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="skipped", attempts=0,
                       error="daily budget spent",
                       workflow_config_id=session.get(Conversation, conversation_id)
                       .workflow_config_id)
        session.add(run)
        session.flush()
        session.scalars(select(Message)).one().reply_run_id = run.id
        session.add(Message(
            conversation_id=conversation_id, instance=INSTANCE, role="assistant",
            content="Limite do dia", reply_run_id=run.id, status="pending", seq=0,
            wa_message_id=responder.outbound_message_id(INSTANCE, run.id, 0),
            extra={"fallback": True}, created_at=utcnow() - timedelta(minutes=5),
        ))

    with session_scope() as session:
        assert sweeper.stranded_conversations(session, utcnow(), grace_seconds=30) \
            == [conversation_id]
    answer(conversation_id)

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Limite do dia"]
    assert llm.requests == []
    with session_scope() as session:
        assert sweeper.stranded_conversations(session, utcnow(), grace_seconds=0) == []


def test_replaying_a_failed_away_message_sends_it_again_without_the_model(
    fast_retries, llm, wuzapi
):
    # Open one hour a week, three days from today: closed now.
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(utcnow().weekday() + 3) % 7]
    conversation_id = receive(make_config(wuzapi, options={"opening_hours": {day: ["10:00-11:00"]}, "away_message": "Fechados agora."}), "oi", "W1")
    wuzapi.failures = [400]  # refused: the run fails at once
    answer(conversation_id)
    run = run_of(conversation_id)
    assert run.status == "failed"

    with session_scope() as session:
        replay.reopen_run(session, run.id, actor="operator")
    answer(conversation_id)

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Fechados agora."]
    assert llm.requests == []
    assert run_of(conversation_id).status == "sent"


def test_a_run_waiting_for_a_retry_stops_once_a_person_takes_over(fast_retries, llm, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "P1")
    llm.fail_status = 500
    fail_retryably(conversation_id, times=1)
    with session_scope() as session:  # the business answers from its phone meanwhile
        conversations.pause(session, session.get(Conversation, conversation_id),
                            reason="human took over", actor="business")
    llm.fail_status = None
    calls = len(llm.requests)

    answer(conversation_id)

    assert len(llm.requests) == calls and wuzapi.sent() == []
    run = run_of(conversation_id)
    assert (run.status, run.error) == ("skipped", "conversation paused")
    assert "message.ignored" in event_types(conversation_id)


@pytest.mark.parametrize(("retry_after", "low", "high"), [("7", 7.0, 30.0), ("3600", 0.0, 30.0)])
def test_a_rate_limited_llm_is_asked_again_after_its_retry_after_within_the_cap(
    db, base_env, llm, wuzapi, retry_after, low, high,
):
    settings_module.override(settings_module.load({
        **base_env, "RETRY_BASE_SECONDS": "0.01", "RETRY_MAX_SECONDS": "30"}))
    try:
        conversation_id = receive(make_config(wuzapi), "oi", "RA1")
        llm.fail_status = 429
        llm.extra_headers = {"Retry-After": retry_after}

        with pytest.raises(responder.RetryLater) as raised:
            answer(conversation_id)
    finally:
        llm.fail_status = None
        settings_module.override(settings_module.load(base_env))

    assert low <= raised.value.retry_in <= high
    run = run_of(conversation_id)
    assert run.status == "running" and run.attempts == 1
    assert (run.next_attempt_at - utcnow()).total_seconds() > low - 1
    with session_scope() as session:
        failed = session.scalars(select(Event).where(
            Event.conversation_id == conversation_id, Event.type == "llm.failed")).all()
        assert [(e.payload["will_retry"], "429" in e.payload["error"]) for e in failed] \
            == [(True, True)]


def test_the_loop_guard_counts_only_the_replies_inside_its_window(fast_retries, llm, wuzapi):
    config_id = make_config(wuzapi, options={"loop_guard_replies": 1, "loop_guard_minutes": 1.0})
    conversation_id = receive(config_id, "um", "G1")
    assert answer(conversation_id) == 1
    with session_scope() as session:
        for reply in session.scalars(select(Message).where(
                Message.conversation_id == conversation_id, Message.role == "assistant")):
            reply.sent_at = reply.sent_at - timedelta(minutes=2)

    receive(config_id, "dois", "G2")
    assert answer(conversation_id) == 1  # the first reply is outside the window
    receive(config_id, "três", "G3")
    answer(conversation_id)

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: um", "Resposta: dois"]
    assert run_of(conversation_id).error == "loop guard"
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).pause_reason == "loop guard"
