"""The SQL of reply runs: what a conversation has waiting, opening a run for a burst, the
history a run answers from, closing a run once its replies went out.

Statements are built once: building a statement per call costs more CPU than running it
(docs/PERFORMANCE.md). They run as Core on the session's connection and give rows back: the
ORM loads an object only where one is changed (a pause, a run that is resumed or closed). Core
statements do not autoflush: the planner flushes before it reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from zapreply.storage.models import Conversation, Message, OutboxStatus, ReplyRun, Role, RunStatus

_messages = Message.__table__
_runs = ReplyRun.__table__
_conversations = Conversation.__table__

CONVERSATION = select(*_conversations.c).where(
    _conversations.c.id == bindparam("conversation_id"))
RUNNING = (
    select(_runs.c.id)
    .where(_runs.c.conversation_id == bindparam("conversation_id"),
           _runs.c.status == RunStatus.RUNNING)
    .order_by(_runs.c.id)
    .limit(1)
)
REPLIES_SENT = select(func.count(func.distinct(_messages.c.reply_run_id))).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.ASSISTANT,
    _messages.c.status == OutboxStatus.SENT,
    _messages.c.sent_at > bindparam("since"),
)
# What is waiting (outbox rows not confirmed sent, customer messages no run has taken), and on
# each of its rows what the planner asks next when there are some: the open run, if any, and
# the replies sent since `since` (the loop guard's window): one round trip for three.
WAITING = (
    select(*_messages.c, RUNNING.scalar_subquery().label("open_run_id"),
           # Its own `messages`, not the outer row's.
           REPLIES_SENT.correlate(None).scalar_subquery().label("replies_sent"))
    .where(_messages.c.conversation_id == bindparam("conversation_id"), or_(
        and_(_messages.c.role == Role.ASSISTANT, _messages.c.status == OutboxStatus.PENDING),
        and_(_messages.c.role == Role.CUSTOMER, _messages.c.reply_run_id.is_(None)),
    ))
    .order_by(_messages.c.id)
)
MORE_WAITING = select(exists().where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    or_(
        and_(_messages.c.role == Role.CUSTOMER, _messages.c.reply_run_id.is_(None)),
        and_(_messages.c.role == Role.ASSISTANT, _messages.c.status == OutboxStatus.PENDING),
    ),
))
HISTORY = (
    select(*_messages.c)
    .where(
        _messages.c.conversation_id == bindparam("conversation_id"),
        # Not `role IN (...)`: SQLAlchemy renders an IN list into the SQL at every execution.
        or_(_messages.c.role == Role.CUSTOMER, _messages.c.role == Role.ASSISTANT,
            _messages.c.role == Role.BUSINESS),
        # Customer messages up to this run's burst (later ones belong to the next run);
        # everything we (or the business) sent, even if written after the burst arrived.
        (_messages.c.role != Role.CUSTOMER) | (_messages.c.id <= bindparam("newest")),
        (_messages.c.role != Role.ASSISTANT) | (_messages.c.status == OutboxStatus.SENT),
    )
    .order_by(_messages.c.id.desc())
    .limit(bindparam("limit"))
)
READ_IDS = (
    select(_messages.c.wa_message_id, _messages.c.extra["sender"].as_string())
    .where(_messages.c.reply_run_id == bindparam("run_id"), _messages.c.role == Role.CUSTOMER)
    .order_by(_messages.c.id)
)
CLOSE_SENT_RUN = (
    update(_runs).where(_runs.c.id == bindparam("run_id"), _runs.c.status == RunStatus.RUNNING)
    .values(status=RunStatus.SENT, finished_at=bindparam("finished_at"))
)

_OPEN_RUN = insert(_runs).returning(_runs.c.id)
_TAKE_BURST = (
    update(_messages).where(_messages.c.id.in_(bindparam("ids", expanding=True)))
    .values(reply_run_id=bindparam("run_id"))
)
# PostgreSQL fast path of `open_run`: the run opened and the burst bound to it in one round
# trip instead of two.
_OPEN_RUN_FOR_BURST_POSTGRESQL = text("""
WITH run AS (
    INSERT INTO reply_runs (conversation_id, workflow_config_id, status, attempts,
                            next_attempt_at, error, created_at, finished_at)
    VALUES (:conversation_id, :workflow_config_id, :status, :attempts, :next_attempt_at, :error,
            :created_at, :finished_at)
    RETURNING id
), taken AS (
    UPDATE messages SET reply_run_id = (SELECT id FROM run) WHERE id = ANY(:ids)
)
SELECT id FROM run
""").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger())),
    bindparam("created_at", type_=_runs.c.created_at.type),
    bindparam("finished_at", type_=_runs.c.finished_at.type),
    bindparam("next_attempt_at", type_=_runs.c.next_attempt_at.type),
)


def open_run(connection: Connection, values: dict[str, Any], burst: list[int]) -> int:
    """Open a run (`values`: its columns) for the burst (the ids of its customer messages);
    its id."""
    if connection.dialect.name == "postgresql":
        return connection.execute(
            _OPEN_RUN_FOR_BURST_POSTGRESQL, {**values, "ids": burst}).scalar_one()
    return open_run_portable(connection, values, burst)


def open_run_portable(connection: Connection, values: dict[str, Any], burst: list[int]) -> int:
    """`open_run` in two statements any database runs: the reference of the fast path."""
    run_id = connection.execute(_OPEN_RUN, values).scalar_one()
    connection.execute(_TAKE_BURST, {"ids": burst, "run_id": run_id})
    return run_id
