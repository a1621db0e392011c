"""The SQL of daily usage: what each config spent on the LLM per day (`daily_usage`, one row per
config and day), read by primary key and added to by an upsert (zapreply.rules.budget decides
what is spent and what is done about it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zapreply.storage.models import DailyUsage

_usage = DailyUsage.__table__


@dataclass(frozen=True)
class Spent:
    tokens: int
    cost: float


def _add_statement(dialect: str) -> Any:
    # Concurrent replies of one config add to the same row: an upsert, so no read-modify-write
    # race and no duplicate-key error for the first two of a day. The same INSERT … ON
    # CONFLICT on both databases; only SQLAlchemy's construct for it is per dialect.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_usage).values(
        workflow_config_id=bindparam("config_id"), day=bindparam("on_day"),
        tokens=bindparam("add_tokens"), cost=bindparam("add_cost"))
    return statement.on_conflict_do_update(
        index_elements=[_usage.c.workflow_config_id, _usage.c.day],
        set_={"tokens": _usage.c.tokens + statement.excluded.tokens,
              "cost": _usage.c.cost + statement.excluded.cost},
    )


_ADD = {dialect: _add_statement(dialect) for dialect in ("postgresql", "sqlite")}
_MARK_EXCEEDED = (
    update(_usage)
    .where(_usage.c.workflow_config_id == bindparam("config_id"),
           _usage.c.day == bindparam("on_day"), _usage.c.exceeded_at.is_(None))
    .values(exceeded_at=bindparam("now"))
    .returning(_usage.c.tokens, _usage.c.cost)
)


def spent(session: Session, config_id: int, day: date) -> Spent:
    """What the config spent that day (nothing, if it has no row)."""
    usage = session.get(DailyUsage, (config_id, day))
    return Spent(usage.tokens, usage.cost) if usage is not None else Spent(0, 0.0)


def add(session: Session, config_id: int, day: date, tokens: int, cost: float) -> None:
    """Add to what the config spent that day (its row made if it has none)."""
    connection = session.connection()
    connection.execute(_ADD[connection.dialect.name], {
        "config_id": config_id, "on_day": day, "add_tokens": tokens, "add_cost": cost})


def mark_exceeded(session: Session, config_id: int, day: date, now: datetime) -> Spent | None:
    """Mark the day's budget exceeded, once: what was spent by then the first time (its row
    made if it has none), None every later time."""
    add(session, config_id, day, 0, 0.0)
    first = session.connection().execute(
        _MARK_EXCEEDED, {"config_id": config_id, "on_day": day, "now": now}).first()
    return Spent(first.tokens, first.cost) if first is not None else None
