"""Daily LLM budgets per config, driven through the running receiver and a real worker: once a
config has spent its tokens (or dollars) for the day, new messages get no LLM call but the
fallback text, or a handoff to a person, and the first of the day writes `budget.exceeded`."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import fixture_json
from tests.e2e import events_of, post, wait_for
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, DailyUsage, utcnow

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"
FALLBACK = "Nosso atendimento automático volta amanhã."
# The LLM stand-in reports 42 prompt + 7 completion tokens per call.
TOKENS_PER_CALL = 49


def customer_says(receiver: str, text: str, chat: str = CUSTOMER) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=chat,
                                 Sender=chat)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def usage_rows() -> list[tuple]:
    with session_scope() as session:
        return [(r.day, r.tokens) for r in session.scalars(select(DailyUsage))]


def test_a_spent_token_budget_sends_the_fallback_without_calling_the_llm(
    db, receiver, wuzapi, llm
):
    config_id = make_config(wuzapi.url, options={
        "daily_token_budget": 40, "fallback_text": FALLBACK, "timezone": "America/Sao_Paulo"})

    customer_says(receiver, "primeira")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    customer_says(receiver, "segunda")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    customer_says(receiver, "terceira")
    wuzapi.wait_for(lambda r: len(r) >= 3)

    assert replies(wuzapi) == ["Resposta: primeira", FALLBACK, FALLBACK]
    assert len(llm.requests) == 1
    today = utcnow().astimezone(ZoneInfo("America/Sao_Paulo")).date()
    assert usage_rows() == [(today, TOKENS_PER_CALL)]
    [exceeded] = events_of("budget.exceeded")  # once a day, not once a message
    assert exceeded.payload == {
        "workflow_config_id": config_id, "day": today.isoformat(), "tokens": TOKENS_PER_CALL,
        "cost": 0.0, "daily_token_budget": 40, "daily_cost_budget": None,
        "action": "fallback"}
    reasons = [e.payload["reason"] for e in events_of("message.ignored")]
    assert reasons == ["daily budget spent", "daily budget spent"]
    assert events_of("llm.completed")[0].payload["prompt_tokens"] == 42


def test_the_handoff_action_pauses_the_conversation_for_a_person(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"daily_token_budget": 1, "budget_action": "handoff",
                                     "handoff_text": "Vou chamar um atendente.",
                                     "fallback_text": FALLBACK})
    customer_says(receiver, "primeira")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    customer_says(receiver, "segunda")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    customer_says(receiver, "terceira")
    wait_for(lambda: len(events_of("message.ignored")) == 2)

    assert replies(wuzapi) == ["Resposta: primeira", "Vou chamar um atendente."]
    assert len(llm.requests) == 1
    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
        assert conversation.status == "paused" and conversation.paused_until is None
    assert [e.payload["reason"] for e in events_of("handoff.requested")] == ["daily budget spent"]
    assert [e.payload["actor"] for e in events_of("conversation.paused")] == ["budget"]
    assert [e.payload["reason"] for e in events_of("message.ignored")] == [
        "daily budget spent", "conversation paused"]
    assert events_of("budget.exceeded")[0].payload["action"] == "handoff"


def test_a_cost_budget_counts_what_litellm_prices(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, model="openai/gpt-4o-mini",
                options={"daily_cost_budget": 0.000001, "fallback_text": FALLBACK})
    customer_says(receiver, "primeira")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    customer_says(receiver, "segunda")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    assert replies(wuzapi) == ["Resposta: primeira", FALLBACK]
    cost = events_of("llm.completed")[0].payload["cost"]
    assert cost and cost > 0.000001
    assert events_of("budget.exceeded")[0].payload["cost"] == pytest.approx(cost)


def test_the_budget_is_per_day_and_per_config(db, receiver, wuzapi, llm):
    config_id = make_config(wuzapi.url, options={"daily_token_budget": 100,
                                                 "fallback_text": FALLBACK})
    other = make_config(wuzapi.url, name="Outro", instance="outra-instancia",
                        options={"daily_token_budget": 100})
    today = utcnow().date()
    with session_scope() as session:
        # Yesterday this config spent everything; today another config did.
        session.add(DailyUsage(workflow_config_id=config_id, day=today - timedelta(days=1),
                               tokens=10_000, cost=0.0))
        session.add(DailyUsage(workflow_config_id=other, day=today, tokens=10_000, cost=0.0))

    customer_says(receiver, "bom dia")
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert replies(wuzapi) == ["Resposta: bom dia"]
    with session_scope() as session:
        mine = session.get(DailyUsage, (config_id, today))
        assert mine.tokens == TOKENS_PER_CALL and mine.exceeded_at is None
    assert events_of("budget.exceeded") == []


def test_a_config_without_a_budget_keeps_no_usage(db, receiver, wuzapi, llm):
    make_config(wuzapi.url)
    customer_says(receiver, "oi")
    wuzapi.wait_for(lambda r: len(r) >= 1)
    wait_for(lambda: bool(events_of("message.sent")))
    assert usage_rows() == []


def test_a_zero_budget_sends_nothing_when_there_is_no_fallback_text(db, receiver, wuzapi, llm):
    make_config(wuzapi.url, options={"daily_token_budget": 0})
    customer_says(receiver, "oi")
    wait_for(lambda: bool(events_of("budget.exceeded")))
    wait_for(lambda: bool(events_of("message.ignored")))
    assert llm.requests == [] and wuzapi.sent() == []
    assert events_of("budget.exceeded")[0].payload["tokens"] == 0
