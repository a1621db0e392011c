"""Daily budgets on both databases: what a config spent is added to one row per day (an upsert
on PostgreSQL and on SQLite alike), checked before a reply, and turned into a fallback or a
handoff once spent, with `budget.exceeded` written once a day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.factories import make_config
from tests.zapreply.replies.test_responder import event_types, receive, run_of
from zapreply.llm.chat import Completion
from zapreply.replies import responder
from zapreply.rules import budget
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.storage.db import session_scope
from zapreply.storage.models import (
    Conversation,
    DailyUsage,
    Event,
    ReplyRun,
    WorkflowConfig,
    utcnow,
)

FALLBACK = "Nosso atendimento automático volta amanhã."
# 23:30 in São Paulo on 1 March: already 2 March in UTC.
LATE_EVENING = datetime.fromisoformat("2026-03-02T02:30:00+00:00")


def spend(prompt: int, completion: int, cost: float | None = None) -> Completion:
    return Completion(content="", prompt_tokens=prompt, completion_tokens=completion, cost=cost)


def options(config_id: int) -> Options:
    with session_scope() as session:
        return options_of(session.get(WorkflowConfig, config_id))


def usage() -> list[tuple[int, date, int, float]]:
    with session_scope() as session:
        return [(row.workflow_config_id, row.day, row.tokens, row.cost) for row in
                session.scalars(select(DailyUsage).order_by(DailyUsage.day))]


def record(config_id: int, completions: list[Completion], now: datetime) -> None:
    with session_scope() as session:
        budget.record_usage(session, config_id, options(config_id), completions, now)


def is_spent(config_id: int, now: datetime) -> bool:
    with session_scope() as session:
        return budget.is_spent(session, config_id, options(config_id), now)


def test_what_replies_spend_adds_up_on_the_configs_day(database, wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 100,
                                             "timezone": "America/Sao_Paulo"})

    record(config_id, [spend(30, 5, 0.001), spend(10, 5)], LATE_EVENING)
    record(config_id, [spend(20, 10, 0.002)], LATE_EVENING)
    record(config_id, [spend(1, 1)], LATE_EVENING + timedelta(hours=1))  # 2 March there

    assert usage() == [(config_id, date(2026, 3, 1), 80, 0.003),
                       (config_id, date(2026, 3, 2), 2, 0.0)]


def test_a_budget_is_spent_once_the_days_tokens_reach_it(database, wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 50})
    now = utcnow()

    record(config_id, [spend(40, 9)], now)
    under = is_spent(config_id, now)
    record(config_id, [spend(1, 0)], now)

    assert (under, is_spent(config_id, now)) == (False, True)
    assert is_spent(config_id, now + timedelta(days=1)) is False


def test_a_cost_budget_is_spent_by_what_was_priced_and_by_transcriptions(database, wuzapi):
    config_id = make_config(wuzapi, options={"daily_cost_budget": 0.01})
    now = utcnow()

    record(config_id, [spend(10, 10, 0.006), spend(10, 10)], now)
    priced_only = is_spent(config_id, now)
    with session_scope() as session:
        budget.record_transcription(session, config_id, options(config_id), 0.004, now)

    assert (priced_only, is_spent(config_id, now)) == (False, True)
    assert usage() == [(config_id, now.date(), 40, 0.01)]


def test_a_config_without_a_budget_keeps_no_usage_and_is_never_spent(database, wuzapi):
    config_id = make_config(wuzapi)

    record(config_id, [spend(10_000, 10_000, 5.0)], utcnow())

    assert usage() == []
    assert is_spent(config_id, utcnow()) is False


def turn_away(config_id: int, conversation_id: int, now: datetime) -> list[str]:
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, workflow_config_id=config_id,
                       status="running", attempts=0)
        session.add(run)
        session.flush()
        return budget.turn_away(session, session.get(Conversation, conversation_id), run,
                                options(config_id), now)


def events_of(type_: str) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [e.payload for e in session.scalars(
            select(Event).where(Event.type == type_).order_by(Event.id))]


def test_the_first_turn_away_of_a_day_writes_budget_exceeded_with_what_was_spent(
        database, wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 40,
                                             "fallback_text": FALLBACK})
    conversation_id = receive(config_id, "oi", "B1")
    now = utcnow()
    record(config_id, [spend(42, 7)], now)

    first = turn_away(config_id, conversation_id, now)
    second = turn_away(config_id, conversation_id, now)
    next_day = turn_away(config_id, conversation_id, now + timedelta(days=1))

    assert first == second == next_day == [FALLBACK]
    assert events_of("budget.exceeded") == [
        {"workflow_config_id": config_id, "day": now.date().isoformat(), "tokens": 49,
         "cost": 0.0, "daily_token_budget": 40, "daily_cost_budget": None,
         "action": "fallback"},
        {"workflow_config_id": config_id, "day": (now + timedelta(days=1)).date().isoformat(),
         "tokens": 0, "cost": 0.0, "daily_token_budget": 40, "daily_cost_budget": None,
         "action": "fallback"},
    ]
    with session_scope() as session:
        marked = session.get(DailyUsage, (config_id, now.date()))
        assert (marked.tokens, marked.exceeded_at is not None) == (49, True)


def test_the_handoff_action_pauses_the_conversation_for_a_person(database, wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 0, "budget_action": "handoff",
                                             "handoff_text": "Vou chamar um atendente."})
    conversation_id = receive(config_id, "oi", "B2")

    texts = turn_away(config_id, conversation_id, utcnow())

    assert texts == ["Vou chamar um atendente."]
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id)
        assert (conversation.status, conversation.paused_until) == ("paused", None)
    assert [e["reason"] for e in events_of("handoff.requested")] == [budget.SPENT]
    assert [e["action"] for e in events_of("budget.exceeded")] == ["handoff"]


def test_a_spent_budget_sends_the_fallback_without_asking_the_model(database, llm, wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 40,
                                             "fallback_text": FALLBACK})
    first = receive(config_id, "primeira", "B3")
    assert responder.answer_conversation(first, owner="test") == 1

    receive(config_id, "segunda", "B4")
    responder.answer_conversation(first, owner="test")

    assert [r["body"]["Body"] for r in wuzapi.sent()] == ["Resposta: primeira", FALLBACK]
    assert len(llm.requests) == 1
    assert (run_of(first).status, run_of(first).error) == ("skipped", budget.SPENT)
    assert event_types(first) == [
        "message.received", "llm.completed", "message.sent",
        "message.received", "message.ignored", "budget.exceeded", "message.sent"]
    assert [tokens for _, _, tokens, _ in usage()] == [49]
