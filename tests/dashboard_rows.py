"""Rows as the pipeline leaves them for the dashboard to count: replies with their customer
message and delivery times, events, daily usage."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message, ReplyRun

_ids = itertools.count(1)


def conversation(config_id: int, instance: str = "loja-teste", **columns: Any) -> int:
    with session_scope() as session:
        number = next(_ids)
        row = Conversation(**{
            "instance": instance, "chat_jid": f"55219{number:08d}@s.whatsapp.net",
            "contact_phone": f"55219{number:08d}", "workflow_config_id": config_id,
            "status": "active", "lease_token": 0, **columns})
        session.add(row)
        session.flush()
        return row.id


def customer_message(conversation_id: int, at: datetime, run_id: int | None = None,
                     instance: str = "loja-teste") -> None:
    with session_scope() as session:
        session.add(Message(conversation_id=conversation_id, instance=instance, role="customer",
                            content="Oi", wa_message_id=f"WA-{next(_ids)}", created_at=at,
                            reply_run_id=run_id))


def reply(config_id: int, conversation_id: int, received_at: datetime, seconds: float,
          instance: str = "loja-teste") -> int:
    """A customer's message answered `seconds` after it was recorded; the run's id."""
    sent_at = received_at + timedelta(seconds=seconds)
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, workflow_config_id=config_id,
                       status="sent", attempts=1, created_at=received_at, finished_at=sent_at)
        session.add(run)
        session.flush()
        session.add_all([
            Message(conversation_id=conversation_id, instance=instance, role="customer",
                    content="Oi", wa_message_id=f"WA-{next(_ids)}", created_at=received_at,
                    reply_run_id=run.id),
            Message(conversation_id=conversation_id, instance=instance, role="assistant",
                    content="Olá!", status="sent", seq=0, wa_message_id=f"OUT-{next(_ids)}",
                    reply_run_id=run.id, created_at=received_at, sent_at=sent_at),
        ])
        return run.id


def event(type_: str, conversation_id: int, at: datetime, **payload: Any) -> None:
    with session_scope() as session:
        session.add(Event(type=type_, conversation_id=conversation_id, payload=payload,
                          created_at=at))


def daily_usage(config_id: int, day: Any, tokens: int, cost: float) -> None:
    """Added to what the config spent that day, as the budget records it."""
    from zapreply.storage import daily_usage as store

    with session_scope() as session:
        store.add(session, config_id, day, tokens, cost)


def a_month_of_traffic(config_id: int, now: datetime) -> None:
    """Thirty days of a small shop's traffic, busier in the afternoon, for the pictures: replies
    with their times, LLM calls with their cost, a few handoffs and failures."""
    import random

    chance = random.Random(15)
    conversations = [conversation(config_id) for _ in range(6)]
    spent_today = [0, 0.0]
    hours = [now - timedelta(hours=h) for h in range(24)] + \
        [now - timedelta(days=d, hours=h) for d in range(1, 30) for h in (2, 5, 7, 9, 12, 15)]
    for at in hours:
        busy = 1 + (3 if 12 <= at.hour <= 19 else 0) + chance.randint(0, 2)
        for _ in range(busy):
            where = chance.choice(conversations)
            received = at - timedelta(minutes=chance.randint(1, 50))
            reply(config_id, where, received, chance.uniform(1.2, 3.5)
                  + (chance.uniform(4, 12) if chance.random() < 0.1 else 0))
            tokens_in, tokens_out = chance.randint(600, 1400), chance.randint(40, 160)
            cost = chance.uniform(0.0008, 0.002)
            event("llm.completed", where, received, model="openai/stub-model",
                  prompt_tokens=tokens_in, completion_tokens=tokens_out, cost=cost,
                  latency_ms=900)
            if received.date() == now.date():
                spent_today[0] += tokens_in + tokens_out
                spent_today[1] += cost
        if chance.random() < 0.25:
            event("handoff.requested", chance.choice(conversations), at, reason="pediu atendente")
        if chance.random() < 0.12:
            event("run.failed", chance.choice(conversations), at, reason="llm: RateLimitError")
    daily_usage(config_id, now.date(), int(spent_today[0]), spent_today[1])
