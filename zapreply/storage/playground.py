"""The console playground's turns (table playground_turns): written by the console when an
operator tries a message, and by the worker as the model's answer streams in.

The worker writes the growing text in short autocommit statements (a few a second), each
fenced on the turn still running, so the console's readers see it without waiting for the
answer to end; nothing here touches conversations, runs or a budget's usage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zapreply.storage.db import autocommit
from zapreply.storage.models import PlaygroundStatus, PlaygroundTurn, utcnow

_turns = PlaygroundTurn.__table__


def claim(turn_id: int) -> bool:
    """Mark a queued turn running; False when it is not queued (a redelivered task)."""
    with autocommit() as connection:
        return connection.execute(
            update(_turns).where(_turns.c.id == turn_id,
                                 _turns.c.status == PlaygroundStatus.QUEUED)
            .values(status=PlaygroundStatus.RUNNING, updated_at=utcnow())
        ).rowcount == 1


def write_progress(turn_id: int, streamed: str, tool_calls: list[dict[str, Any]]) -> None:
    with autocommit() as connection:
        connection.execute(
            update(_turns).where(_turns.c.id == turn_id,
                                 _turns.c.status == PlaygroundStatus.RUNNING)
            .values(streamed=streamed, tool_calls=tool_calls, updated_at=utcnow()))


def finish(turn_id: int, *, streamed: str, answer: str, tool_calls: list[dict[str, Any]],
           model: str | None, prompt_tokens: int | None, completion_tokens: int | None,
           cost: float | None) -> None:
    now = utcnow()
    with autocommit() as connection:
        connection.execute(
            update(_turns).where(_turns.c.id == turn_id,
                                 _turns.c.status == PlaygroundStatus.RUNNING)
            .values(status=PlaygroundStatus.DONE, streamed=streamed, answer=answer,
                    tool_calls=tool_calls, model=model, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, cost=cost, updated_at=now,
                    finished_at=now))


def fail(turn_id: int, error: str, *, streamed: str | None = None) -> None:
    """A turn that will not be answered, with a reason a person can read."""
    now = utcnow()
    values: dict[str, Any] = {"status": PlaygroundStatus.FAILED, "error": error,
                              "updated_at": now, "finished_at": now}
    if streamed is not None:
        values["streamed"] = streamed
    with autocommit() as connection:
        connection.execute(
            update(_turns).where(_turns.c.id == turn_id,
                                 _turns.c.status.in_([PlaygroundStatus.QUEUED,
                                                      PlaygroundStatus.RUNNING]))
            .values(**values))


def chat_turns(session: Session, config_id: int, chat: str, *,
               before: int | None = None) -> list[PlaygroundTurn]:
    """A chat's turns, oldest first (`before`: only those older than that turn)."""
    statement = select(PlaygroundTurn).where(PlaygroundTurn.workflow_config_id == config_id,
                                             PlaygroundTurn.chat == chat)
    if before is not None:
        statement = statement.where(PlaygroundTurn.id < before)
    return list(session.scalars(statement.order_by(PlaygroundTurn.id)).all())


def progress(session: Session, turn_id: int) -> tuple[str, str, datetime] | None:
    """A turn's status, streamed text and last write: one row read by its key."""
    row = session.execute(select(_turns.c.status, _turns.c.streamed, _turns.c.updated_at)
                          .where(_turns.c.id == turn_id)).first()
    return (row.status, row.streamed, row.updated_at) if row is not None else None


def give_up_stale(session: Session, config_id: int, before: datetime, reason: str) -> None:
    """Fail a config's turns still waiting or being written with no write since `before`:
    no worker took them, or the one that did died."""
    now = utcnow()
    session.execute(
        update(_turns).where(_turns.c.workflow_config_id == config_id,
                             _turns.c.status.in_([PlaygroundStatus.QUEUED,
                                                  PlaygroundStatus.RUNNING]),
                             _turns.c.updated_at < before)
        .values(status=PlaygroundStatus.FAILED, error=reason, updated_at=now, finished_at=now))


def usage(session: Session, config_id: int, since: datetime) -> tuple[int, float]:
    """Tokens and cost the playground spent on a config since `since`: kept apart from the
    config's daily budget."""
    row = session.execute(
        select(func.coalesce(func.sum(_turns.c.prompt_tokens), 0)
               + func.coalesce(func.sum(_turns.c.completion_tokens), 0),
               func.coalesce(func.sum(_turns.c.cost), 0.0))
        .where(_turns.c.workflow_config_id == config_id, _turns.c.created_at >= since)).one()
    return int(row[0] or 0), float(row[1] or 0.0)
