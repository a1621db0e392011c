"""The SQL of the console's dashboard and of the gauges the console's /metrics serves: counts,
LLM usage and reply times per hour or day over a bounded window, optionally for one config.

Every query is bounded by the window on an indexed time column (messages.created_at,
events.created_at, reply_runs.created_at), grouped in the database into time buckets (UTC).
Reply-time percentiles are PostgreSQL's percentile_cont; SQLite has none, so there the window's
reply times are read and the same interpolation is done in Python (`percentile`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, and_, case, extract, func, literal_column, select
from sqlalchemy.orm import aliased

from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    ConversationStatus,
    Event,
    Message,
    ReplyRun,
    Role,
    RunStatus,
)

HOUR = "hour"
DAY = "day"
STEP = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}
_SQLITE_FORMAT = {HOUR: "%Y-%m-%d %H:00:00", DAY: "%Y-%m-%d 00:00:00"}


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC, in whole `unit`s (HOUR or DAY)."""

    start: datetime
    end: datetime
    unit: str

    def buckets(self) -> list[datetime]:
        step, at, found = STEP[self.unit], self.start, []
        while at < self.end:
            found.append(at)
            at += step
        return found


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class ReplyTimes:
    """Replies delivered, and the median and 95th percentile of the seconds from the customer's
    last message of a burst being recorded to the first message of its reply being sent."""

    replies: int = 0
    p50: float | None = None
    p95: float | None = None


def _bucket(column: Any, unit: str, dialect: str) -> Any:
    """The start of the hour or day `column` falls in, UTC. Literals, not bound parameters: the
    same expression is in the SELECT and the GROUP BY, and PostgreSQL tells two expressions
    equal only when their parameters are the same placeholder."""
    if unit not in STEP:
        raise ValueError(f"unknown unit {unit!r}")
    if dialect == "postgresql":
        return func.date_trunc(literal_column(f"'{unit}'"),
                               func.timezone(literal_column("'UTC'"), column), type_=DateTime())
    return func.strftime(literal_column(f"'{_SQLITE_FORMAT[unit]}'"), column)


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def messages_in(connection: Connection, window: Window, config_id: int | None
                ) -> dict[datetime, int]:
    """Customer messages recorded per bucket."""
    bucket = _bucket(Message.created_at, window.unit, connection.dialect.name).label("bucket")
    statement = (
        select(bucket, func.count())
        .where(Message.created_at >= window.start, Message.created_at < window.end,
               Message.role == Role.CUSTOMER)
        .group_by(bucket)
    )
    if config_id is not None:
        statement = statement.join(Conversation, Conversation.id == Message.conversation_id) \
            .where(Conversation.workflow_config_id == config_id)
    return {_as_utc(at): count for at, count in connection.execute(statement)}


def events_counted(connection: Connection, window: Window, config_id: int | None,
                   type_: EventType) -> dict[datetime, int]:
    """Events of one type per bucket (handoff.requested, run.failed)."""
    bucket = _bucket(Event.created_at, window.unit, connection.dialect.name).label("bucket")
    statement = _events_of(select(bucket, func.count()), window, config_id, (type_,)) \
        .group_by(bucket)
    return {_as_utc(at): count for at, count in connection.execute(statement)}


def llm_usage(connection: Connection, window: Window, config_id: int | None
              ) -> dict[datetime, Usage]:
    """Tokens of llm.completed, and the cost of those and of media.transcribed, per bucket."""
    bucket = _bucket(Event.created_at, window.unit, connection.dialect.name).label("bucket")
    statement = _events_of(select(
        bucket,
        func.coalesce(func.sum(Event.payload["prompt_tokens"].as_integer()), 0),
        func.coalesce(func.sum(Event.payload["completion_tokens"].as_integer()), 0),
        func.coalesce(func.sum(Event.payload["cost"].as_float()), 0.0),
    ), window, config_id, (EventType.LLM_COMPLETED, EventType.MEDIA_TRANSCRIBED)) \
        .group_by(bucket)
    return {_as_utc(at): Usage(int(tokens_in), int(tokens_out), float(cost))
            for at, tokens_in, tokens_out, cost in connection.execute(statement)}


def _events_of(statement: Any, window: Window, config_id: int | None,
               types: Sequence[EventType]) -> Any:
    statement = statement.where(Event.created_at >= window.start, Event.created_at < window.end,
                                Event.type.in_([str(t) for t in types]))
    if config_id is not None:
        statement = statement.join(Conversation, Conversation.id == Event.conversation_id) \
            .where(Conversation.workflow_config_id == config_id)
    return statement


def reply_times(connection: Connection, window: Window, config_id: int | None
                ) -> tuple[dict[datetime, ReplyTimes], ReplyTimes]:
    """Per bucket of the run's start, and over the whole window: replies delivered and their
    p50/p95 reply time. A run counts once it has sent a message (a silent handoff does not)."""
    dialect = connection.dialect.name
    sent, received = aliased(Message), aliased(Message)
    first_sent = (select(func.min(sent.sent_at))
                  .where(sent.reply_run_id == ReplyRun.id, sent.role == Role.ASSISTANT,
                         sent.sent_at.is_not(None))
                  .scalar_subquery())
    last_received = (select(func.max(received.created_at))
                     .where(received.reply_run_id == ReplyRun.id,
                            received.role == Role.CUSTOMER)
                     .scalar_subquery())
    runs = (select(_bucket(ReplyRun.created_at, window.unit, dialect).label("bucket"),
                   first_sent.label("sent_at"), last_received.label("received_at"))
            .where(ReplyRun.created_at >= window.start, ReplyRun.created_at < window.end,
                   ReplyRun.status == RunStatus.SENT))
    if config_id is not None:
        runs = runs.where(ReplyRun.workflow_config_id == config_id)
    runs = runs.subquery()
    answered = and_(runs.c.sent_at.is_not(None), runs.c.received_at.is_not(None))
    if dialect == "postgresql":
        seconds = extract("epoch", runs.c.sent_at - runs.c.received_at)
        figures = (func.count(), func.percentile_cont(0.5).within_group(seconds),
                   func.percentile_cont(0.95).within_group(seconds))
        grouped = connection.execute(
            select(runs.c.bucket, *figures).where(answered).group_by(runs.c.bucket))
        per_bucket = {_as_utc(at): ReplyTimes(n, _seconds(p50), _seconds(p95))
                      for at, n, p50, p95 in grouped}
        n, p50, p95 = connection.execute(select(*figures).where(answered)).one()
        return per_bucket, ReplyTimes(n, _seconds(p50), _seconds(p95))
    by_bucket: dict[datetime, list[float]] = {}
    for at, sent_at, received_at in connection.execute(
            select(runs.c.bucket, runs.c.sent_at, runs.c.received_at).where(answered)):
        by_bucket.setdefault(_as_utc(at), []).append(
            (_as_utc(sent_at) - _as_utc(received_at)).total_seconds())
    every = sorted(value for values in by_bucket.values() for value in values)
    per_bucket = {at: _times(sorted(values)) for at, values in by_bucket.items()}
    return per_bucket, _times(every)


def reply_seconds(connection: Connection, run_id: int) -> float | None:
    """One run's reply time, as `reply_times` measures it; None until it has sent a message."""
    received, sent = connection.execute(
        select(func.max(case((Message.role == Role.CUSTOMER, Message.created_at))),
               func.min(case((Message.role == Role.ASSISTANT, Message.sent_at))))
        .where(Message.reply_run_id == run_id)).one()
    if received is None or sent is None:
        return None
    return max(0.0, (_as_utc(sent) - _as_utc(received)).total_seconds())


def _seconds(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


def _times(ordered: list[float]) -> ReplyTimes:
    return ReplyTimes(len(ordered), _seconds(percentile(ordered, 0.5)),
                      _seconds(percentile(ordered, 0.95)))


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont over sorted values: linear between the two nearest ranks."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# Conversations by what the bot does with them now: answers (`bot`), waits out a timed pause
# (`paused`), or leaves them to a person until one gives them back (`held`: a handoff, or an
# operator's take-over with no end).
BOT, PAUSED, HELD = "bot", "paused", "held"


def conversations_by_state(connection: Connection, now: datetime) -> dict[str, int]:
    state = case(
        (and_(Conversation.status == ConversationStatus.PAUSED,
              Conversation.paused_until.is_(None)), HELD),
        (and_(Conversation.status == ConversationStatus.PAUSED,
              Conversation.paused_until > now), PAUSED),
        else_=BOT,
    ).label("state")
    counted = {BOT: 0, PAUSED: 0, HELD: 0}
    counted.update(dict(connection.execute(select(state, func.count()).group_by(state)).all()))
    return counted
