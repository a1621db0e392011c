"""The dashboard's figures: per hour over the last 24 hours, or per day over the last 30, for
every config or one — messages in, replies, handoffs, failed runs, reply times (p50/p95), LLM
tokens and cost, and a config's daily budget with what it spent today. Also the conversations
by state that the console's /metrics serves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from zapreply.actions.errors import Invalid, NotFound
from zapreply.rules import budget
from zapreply.rules.configs import options_of
from zapreply.storage import daily_usage
from zapreply.storage import dashboard as store
from zapreply.storage.events import EventType
from zapreply.storage.models import WorkflowConfig, utcnow

UNITS = {store.HOUR: 24, store.DAY: 30}


@dataclass(frozen=True)
class Bucket:
    start: datetime
    messages_in: int
    replies: int
    handoffs: int
    failures: int
    p50_seconds: float | None
    p95_seconds: float | None
    input_tokens: int
    output_tokens: int
    cost: float


@dataclass(frozen=True)
class Budget:
    """A config's daily budget (either may be None) and what it spent today, in its timezone,
    as the budget counts it (daily_usage: transcriptions included)."""

    tokens: int | None
    cost: float | None
    spent_tokens: int
    spent_cost: float


@dataclass(frozen=True)
class Dashboard:
    unit: str
    start: datetime
    end: datetime
    config: WorkflowConfig | None
    buckets: list[Bucket]
    # Over the whole window.
    totals: Bucket
    budget: Budget | None


def window(unit: str, now: datetime) -> store.Window:
    """The last 24 hours by hour or the last 30 days by day (UTC), the current one included."""
    if unit not in UNITS:
        raise Invalid("'unit' must be hour or day")
    current = now.replace(minute=0, second=0, microsecond=0)
    if unit == store.DAY:
        current = current.replace(hour=0)
    step = store.STEP[unit]
    return store.Window(current - step * (UNITS[unit] - 1), current + step, unit)


def dashboard(session: Session, *, unit: str = store.HOUR, config_id: int | None = None,
              now: datetime | None = None) -> Dashboard:
    now = now or utcnow()
    span = window(unit, now)
    config = None
    if config_id is not None:
        config = session.get(WorkflowConfig, config_id)
        if config is None:
            raise NotFound(f"workflow config {config_id} not found")
    connection = session.connection()
    incoming = store.messages_in(connection, span, config_id)
    handoffs = store.events_counted(connection, span, config_id, EventType.HANDOFF_REQUESTED)
    failures = store.events_counted(connection, span, config_id, EventType.RUN_FAILED)
    usage = store.llm_usage(connection, span, config_id)
    times, overall = store.reply_times(connection, span, config_id)
    buckets = []
    for at in span.buckets():
        spent, replied = usage.get(at, store.Usage()), times.get(at, store.ReplyTimes())
        buckets.append(Bucket(at, incoming.get(at, 0), replied.replies, handoffs.get(at, 0),
                              failures.get(at, 0), replied.p50, replied.p95,
                              spent.input_tokens, spent.output_tokens, spent.cost))
    totals = Bucket(
        span.start, sum(b.messages_in for b in buckets), overall.replies,
        sum(b.handoffs for b in buckets), sum(b.failures for b in buckets), overall.p50,
        overall.p95, sum(b.input_tokens for b in buckets),
        sum(b.output_tokens for b in buckets), sum(b.cost for b in buckets))
    return Dashboard(unit, span.start, span.end, config, buckets, totals,
                     _budget(session, config, now))


def _budget(session: Session, config: WorkflowConfig | None, now: datetime) -> Budget | None:
    if config is None:
        return None
    options = options_of(config)
    if not budget.has_budget(options):
        return None
    spent = daily_usage.spent(session, config.id, budget.day_of(now, options))
    return Budget(options.daily_token_budget, options.daily_cost_budget, spent.tokens,
                  spent.cost)


def conversations_by_state(session: Session, now: datetime | None = None) -> dict[str, int]:
    """How many conversations the bot answers (`bot`), are in a timed pause (`paused`), or wait
    for a person to give them back (`held`)."""
    return store.conversations_by_state(session.connection(), now or utcnow())
