"""Answering a conversation.

A run answers every customer message that has no answer yet (a burst), under the conversation's
lease. Its life:

1. open: the unanswered messages are bound to a new `reply_runs` row (or to one that a previous
   attempt left `running`, which is resumed instead);
2. generate: history ▸ LLM ▸ tools ▸ LLM … with no database transaction open; nothing the model
   says leaves the process yet;
3. store: the texts to send become outbox rows (assistant messages, `pending`, each with a
   deterministic WhatsApp message id), together with the LLM and tool events, in one transaction;
4. deliver: pending rows are sent in order and marked `sent`.

A retried or redelivered task resumes at the first step not done: a run with outbox rows never
calls the LLM again, and a row marked sent is never sent again. A row whose send outcome is
unknown (the worker died mid-request) is re-sent with the same message id, which WhatsApp treats
as the same message. Messages that arrive while a run is generating are answered by the next run
of the same holder, in order, rather than folded in: the reply being sent was written for what
the customer had said when it was asked for.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
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
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from zapreply.channel import messaging
from zapreply.llm import business_tools, tools
from zapreply.replies import inbound, leases, media
from zapreply.rules import budget, configs, conversations, groups, hours
from zapreply.rules.configs import option_values
from zapreply.rules.text import quoted_name
from zapreply.settings import Settings, get_settings
from zapreply.storage import events
from zapreply.storage.db import autocommit, get_engine, session_scope
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, WorkflowConfig, utcnow

log = logging.getLogger(__name__)

_messages = Message.__table__
_runs = ReplyRun.__table__
_conversations = Conversation.__table__

# The statements of the common path, built once: building a statement per call costs more CPU
# than running it (see zapreply.replies.leases). Core on the session's connection, rows back: the
# ORM loads an object only where one is changed (a pause, a run that is resumed or closed).
# Core statements do not autoflush: `_plan_once` flushes before it reads.
_CONVERSATION = select(*_conversations.c).where(
    _conversations.c.id == bindparam("conversation_id"))
_RUNNING = (
    select(_runs.c.id)
    .where(_runs.c.conversation_id == bindparam("conversation_id"), _runs.c.status == "running")
    .order_by(_runs.c.id)
    .limit(1)
)
_REPLIES_SENT = select(func.count(func.distinct(_messages.c.reply_run_id))).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == "assistant",
    _messages.c.status == "sent",
    _messages.c.sent_at > bindparam("since"),
)
# What is waiting (outbox rows not confirmed sent, customer messages no run has taken), and on
# each of its rows what the planner asks next when there are some: the open run, if any, and
# the replies sent since `since` (the loop guard's window): one round trip for three.
_WAITING = (
    select(*_messages.c, _RUNNING.scalar_subquery().label("open_run_id"),
           # Its own `messages`, not the outer row's.
           _REPLIES_SENT.correlate(None).scalar_subquery().label("replies_sent"))
    .where(_messages.c.conversation_id == bindparam("conversation_id"), or_(
        and_(_messages.c.role == "assistant", _messages.c.status == "pending"),
        and_(_messages.c.role == "customer", _messages.c.reply_run_id.is_(None)),
    ))
    .order_by(_messages.c.id)
)
_OPEN_RUN = insert(_runs).returning(_runs.c.id)
_TAKE_BURST = (
    update(_messages).where(_messages.c.id.in_(bindparam("ids", expanding=True)))
    .values(reply_run_id=bindparam("run_id"))
)
# PostgreSQL: the run opened and the burst bound to it in one round trip instead of two.
_OPEN_RUN_FOR_BURST = text("""
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


def _open_run(connection: Connection, values: dict[str, Any], burst: list[int]) -> int:
    """Open a run for the burst (the ids of its customer messages); its id."""
    if connection.dialect.name == "postgresql":
        return connection.execute(_OPEN_RUN_FOR_BURST, {**values, "ids": burst}).scalar_one()
    run_id = connection.execute(_OPEN_RUN, values).scalar_one()
    connection.execute(_TAKE_BURST, {"ids": burst, "run_id": run_id})
    return run_id


_HISTORY = (
    select(*_messages.c)
    .where(
        _messages.c.conversation_id == bindparam("conversation_id"),
        # Not `role IN (...)`: SQLAlchemy renders an IN list into the SQL at every execution.
        or_(_messages.c.role == "customer", _messages.c.role == "assistant",
            _messages.c.role == "business"),
        # Customer messages up to this run's burst (later ones belong to the next run);
        # everything we (or the business) sent, even if written after the burst arrived.
        (_messages.c.role != "customer") | (_messages.c.id <= bindparam("newest")),
        (_messages.c.role != "assistant") | (_messages.c.status == "sent"),
    )
    .order_by(_messages.c.id.desc())
    .limit(bindparam("limit"))
)
_READ_IDS = (
    select(_messages.c.wa_message_id, _messages.c.extra["sender"].as_string())
    .where(_messages.c.reply_run_id == bindparam("run_id"), _messages.c.role == "customer")
    .order_by(_messages.c.id)
)
_NEXT_SEQ = select(func.coalesce(func.max(_messages.c.seq) + 1, 0)).where(
    _messages.c.reply_run_id == bindparam("run_id"), _messages.c.role == "assistant")
_ADD_OUTBOX = insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True)
_CLOSE_SENT_RUN = (
    update(_runs).where(_runs.c.id == bindparam("run_id"), _runs.c.status == "running")
    .values(status="sent", finished_at=bindparam("finished_at"))
)
_MORE_WAITING = select(exists().where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    or_(
        and_(_messages.c.role == "customer", _messages.c.reply_run_id.is_(None)),
        and_(_messages.c.role == "assistant", _messages.c.status == "pending"),
    ),
))
_MARK_SENT = (
    update(_messages).where(_messages.c.id == bindparam("row_id"))
    .values(status="sent", provider_message_id=bindparam("provider_id"),
            sent_at=bindparam("sent_at"))
)


# PostgreSQL: the last row of a run sent, in one round trip instead of five (`_MARK_SENT`, its
# event, `_close_sent_run`). Marks the row sent, writes its `message.sent` event, closes the run,
# tells whether anything else is waiting, and gives the lease up when nothing is and the run was
# still ours to close. Data-modifying CTEs all see the snapshot the statement started with: the
# row being marked sent still reads `pending` there, so "anything else waiting" leaves it out.
_LAST_SEND = text("""
WITH sent AS (
    UPDATE messages SET status = 'sent', provider_message_id = :provider_id, sent_at = :sent_at
    WHERE id = :row_id
), event AS (
    INSERT INTO events (type, conversation_id, run_id, payload, created_at)
    VALUES (:event_type, :conversation_id, :run_id, :payload, :sent_at)
), closed AS (
    UPDATE reply_runs SET status = 'sent', finished_at = :sent_at
    WHERE id = :run_id AND status = 'running'
    RETURNING id
), waiting AS (
    SELECT EXISTS (
        SELECT 1 FROM messages
        WHERE conversation_id = :conversation_id
          AND ((role = 'customer' AND reply_run_id IS NULL)
               OR (role = 'assistant' AND status = 'pending' AND id <> :row_id))
    ) AS more
), released AS (
    UPDATE conversations SET lease_owner = NULL, lease_expires_at = NULL, updated_at = :sent_at
    WHERE id = :conversation_id AND lease_token = :token
      AND EXISTS (SELECT 1 FROM closed) AND NOT (SELECT more FROM waiting)
)
SELECT EXISTS (SELECT 1 FROM closed) AS closed, (SELECT more FROM waiting) AS more
""").bindparams(
    bindparam("payload", type_=Event.__table__.c.payload.type),
    bindparam("sent_at", type_=_messages.c.sent_at.type),
)


@dataclass(frozen=True)
class _RunRef:
    """A run opened in this transaction: what the next steps read of it."""

    id: int
    workflow_config_id: int | None


def _entity(session: Session, conversation: Conversation | Row[Any]) -> Conversation:
    """The conversation as an ORM object, to change it (it is read as a row)."""
    if isinstance(conversation, Conversation):
        return conversation
    return session.get(Conversation, conversation.id)


class Busy(Exception):
    """Another worker is answering this conversation; try again shortly."""

    def __init__(self, retry_in: float):
        super().__init__(f"conversation busy, retry in {retry_in:.1f}s")
        self.retry_in = retry_in


class Waiting(Exception):
    """The burst is still arriving; answer after `retry_in` seconds."""

    def __init__(self, retry_in: float):
        super().__init__(f"debouncing, retry in {retry_in:.1f}s")
        self.retry_in = retry_in


class RetryLater(Exception):
    """A failure a retry can fix (LLM or messages API); the run stays open."""

    def __init__(self, reason: str, retry_in: float):
        super().__init__(f"{reason}; retry in {retry_in:.1f}s")
        self.retry_in = retry_in


def backoff(settings: Settings, attempt: int, at_least: float | None = None) -> float:
    """Exponential backoff with jitter around the nominal delay; at least `at_least` (a
    provider's Retry-After), but never more than RETRY_MAX_SECONDS for it: a customer waits."""
    nominal = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    delay = nominal * random.uniform(0.5, 1.5)
    return max(delay, min(at_least or 0.0, settings.retry_max_seconds))


@dataclass
class _Outgoing:
    row_id: int
    text: str
    message_id: str


@dataclass
class _Deliver:
    run_id: int
    send: dict[str, Any]
    to: str
    rows: list[_Outgoing]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Generate:
    run_id: int
    context: _Context
    send: dict[str, Any] = field(default_factory=dict)
    to: str = ""
    chat: str = ""
    # (WhatsApp id, sender JID) of the customer messages this run answers (to mark them read).
    read_ids: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class _Wait:
    seconds: float


# What to do next, decided inside a transaction that holds the lease. `_Wait` and None are
# decided in a transaction that also released it.
_Step = _Generate | _Deliver | _Wait | None


@dataclass
class Started:
    """A conversation claimed and its first step planned, in a transaction not yet committed."""
    conversation_id: int
    token: int
    step: _Step
    finished: list[int]


def start(session: Session, conversation_id: int, *, owner: str) -> Started | None:
    """Claim the conversation's lease and plan its first step in the caller's transaction;
    None if another worker holds the lease. Carry on with `answer_started` once the
    transaction has committed."""
    settings = get_settings()
    claimed = leases.claim_and_load(session, conversation_id, owner, settings.lease_seconds)
    if claimed is None:
        if session.get(Conversation, conversation_id) is None:
            # Erased (zapreply.actions.privacy): nothing left to answer, and no lease anyone could
            # ever take, so not "busy" (that would be retried forever).
            return Started(conversation_id, 0, None, [0])
        return None
    finished = [0]
    token = claimed.lease_token
    step = _plan(session, conversation_id, token, settings, finished, claimed)
    return Started(conversation_id, token, step, finished)


def record_and_start(
    *, config_id: int, instance: str, message: dict[str, Any], owner: str
) -> tuple[inbound.Recorded, Started | None]:
    """Record an inbound message and, when it is to be answered at once, claim and plan its
    conversation in the same transaction: one commit fewer for the common case.

    If planning fails, the message goes with the rolled-back transaction: it is recorded again
    on its own before the error propagates, so a message is never lost with a plan. (A
    database error propagates as it is: the task retries it whole, and recording is
    idempotent.)"""
    planning = False
    try:
        with session_scope() as session:
            recorded = inbound.record_inbound(
                session, config_id=config_id, instance=instance, message=message)
            if not recorded.needs_reply or recorded.debounce_seconds > 0:
                return recorded, None
            planning = True
            return recorded, start(session, recorded.conversation_id, owner=owner)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        if planning:
            with session_scope() as session:
                inbound.record_inbound(
                    session, config_id=config_id, instance=instance, message=message)
        raise


def answer_conversation(conversation_id: int, *, owner: str) -> int:
    """Answer whatever is unanswered in the conversation; return how many runs were finished.

    Each transaction does one step and decides the next, so the common case (one burst, one
    reply) is three short transactions around the LLM call and the send.
    """
    with session_scope() as session:
        started = start(session, conversation_id, owner=owner)
    return answer_started(started)


def answer_started(started: Started | None) -> int:
    """Go on from `start`, whose transaction has committed."""
    if started is None:
        raise Busy(retry_in=random.uniform(0.5, 1.5))
    conversation_id, token, step, finished = (
        started.conversation_id, started.token, started.step, started.finished)
    if step is None or isinstance(step, _Wait):
        return _finish(step, finished)
    settings = get_settings()
    leases.keeper.hold(conversation_id, token)
    released = False
    try:
        while isinstance(step, _Generate | _Deliver):
            if isinstance(step, _Generate):
                step = _generate_and_store(conversation_id, token, step, settings, finished)
            else:
                step = _deliver(conversation_id, token, step, settings, finished)
        released = True
        return _finish(step, finished)
    finally:
        leases.keeper.drop(conversation_id, token)
        if not released:
            with session_scope() as session:
                leases.release_conversation(session, conversation_id, token)


def _finish(step: _Step, finished: list[int]) -> int:
    if isinstance(step, _Wait):
        raise Waiting(retry_in=step.seconds)
    return finished[0]


def _plan(
    session: Session, conversation_id: int, token: int, settings: Settings, finished: list[int],
    claimed: Row[Any] | None = None,
) -> _Step:
    """The next step for a conversation whose lease this transaction holds (`claimed`: its
    row as the claim returned it, if nothing changed it since)."""
    while True:
        step = _plan_once(session, conversation_id, settings, finished, claimed)
        claimed = None
        if step == "again":
            continue
        if step is None or isinstance(step, _Wait):
            leases.release_conversation(session, conversation_id, token)
        return step


def _plan_once(  # noqa: C901 - one decision table, read top to bottom
    session: Session, conversation_id: int, settings: Settings, finished: list[int],
    conversation: Conversation | Row[Any] | None = None,
) -> _Step | str:
    session.flush()  # what the ORM changed must be seen by the Core reads below
    connection = session.connection()
    if conversation is None:
        conversation = connection.execute(
            _CONVERSATION, {"conversation_id": conversation_id}).first()
        if conversation is None:
            return None
    now = utcnow()

    # What is waiting: outbox rows not confirmed sent, and customer messages no run has taken
    # (one query for both, which also brings the open run and the loop guard's count).
    config = configs.get(session, conversation.workflow_config_id)
    options = option_values(config) if config else {}
    loop_minutes = options.get("loop_guard_minutes") or 0
    waiting = connection.execute(_WAITING, {
        "conversation_id": conversation_id, "since": now - timedelta(minutes=loop_minutes),
    }).all()

    # 1. Replies already written but not confirmed sent: send them first, in order (this
    #    includes the fallback text of a run that failed).
    undelivered = sorted((m for m in waiting if m.role == "assistant"),
                         key=lambda m: (m.reply_run_id or 0, m.seq or 0))
    if undelivered:
        run = session.get(ReplyRun, undelivered[0].reply_run_id)
        if run.status == "running" and run.next_attempt_at and run.next_attempt_at > now:
            return _Wait((run.next_attempt_at - now).total_seconds())
        return _deliver_step(session, conversation, run,
                             [m for m in undelivered if m.reply_run_id == run.id])

    # 2. A run left open (a retry, a crash, a replay): resume it.
    open_id = waiting[0].open_run_id if waiting else connection.execute(
        _RUNNING, {"conversation_id": conversation_id}).scalar()
    if open_id is not None:
        run = session.get(ReplyRun, open_id)
        if run.next_attempt_at is not None and run.next_attempt_at > now:
            return _Wait((run.next_attempt_at - now).total_seconds())
        # A fallback text sent by an earlier failed attempt is not an answer (see replay).
        answered = session.scalar(
            select(Message.id).where(
                Message.reply_run_id == run.id, Message.role == "assistant",
                Message.extra["fallback"].as_boolean().is_not(True),
            ).limit(1)
        ) is not None
        if answered:
            run.status = "sent"
            run.finished_at = now
            finished[0] += 1
            return "again"
        if conversations.is_paused(conversation, now):
            # A person took the conversation over while this run waited for a retry: the bot
            # must not answer after them.
            run.status = "skipped"
            run.error = "conversation paused"
            run.finished_at = now
            events.record(session, events.MESSAGE_IGNORED, conversation_id=conversation_id,
                          run_id=run.id, reason="conversation paused")
            return "again"
        return _generate_step(session, conversation, run, settings)

    # 3. Customer messages no run has taken: open a run for the whole burst.
    pending = [m for m in waiting if m.role == "customer"]
    if not pending:
        return None
    skip_reason = None
    closed: hours.Closed | None = None
    if conversations.pause_expired(conversation, now):
        conversation = _entity(session, conversation)
        conversations.end_expired_pause(session, conversation, now)  # its event, once
    if config is None or not config.is_active:
        skip_reason = "no active workflow config"
    elif conversations.is_paused(conversation, now):
        skip_reason = "conversation paused"
    elif _looping(session, conversation_id, options, now,
                  member=(pending[-1].extra or {}).get("sender")
                  if groups.is_group_chat(conversation.chat_jid) else None,
                  replies_sent=pending[0].replies_sent):
        # Another bot is probably answering ours: stop before the costs run away.
        conversation = _entity(session, conversation)
        conversations.pause(session, conversation, reason="loop guard", until=None,
                            actor="loop guard")
        skip_reason = "loop guard"
    else:
        ready_at = pending[-1].created_at + timedelta(seconds=config.debounce_seconds)
        if ready_at > now:
            return _Wait((ready_at - now).total_seconds())
        # Opening hours, judged when the burst arrived: outside them no model call, at most
        # the away message (zapreply.rules.hours).
        closed = hours.closed_for(session, conversation_id, options,
                                  pending[-1].created_at)
        if closed is not None and closed.away_text is None:
            skip_reason = "outside opening hours"
        elif closed is None and budget.is_spent(session, config.id, options, now):
            skip_reason = budget.SPENT
    run = _RunRef(_open_run(connection, {
        "conversation_id": conversation_id,
        "workflow_config_id": config.id if config else None,
        "status": "skipped" if skip_reason else "running",
        "attempts": 0,
        "next_attempt_at": None,
        "error": skip_reason,
        "created_at": now,
        "finished_at": now if skip_reason else None,
    }, [m.id for m in pending]), config.id if config else None)
    if skip_reason or closed is not None:  # not answered (the away message is no answer)
        for message in pending:
            if message.media_type:
                media.drop_inline(session.get(Message, message.id))
    if closed is not None and closed.away_text is not None:
        # Sent like any reply (outbox row, deterministic id, delivered by step 1); the
        # customer's messages stay in the history for when the business opens.
        away = _add_outbox(session, conversation, run.id, [closed.away_text],
                           extra={"away": True})
        events.record(session, events.AWAY_QUEUED, conversation_id=conversation_id,
                      run_id=run.id, closed_since=closed.since.isoformat(),
                      message_ids=[row.row_id for row in away],
                      wa_message_ids=[m.wa_message_id for m in pending])
        return "again"
    if skip_reason:
        events.record(
            session, events.MESSAGE_IGNORED, conversation_id=conversation_id, run_id=run.id,
            reason=skip_reason, wa_message_ids=[m.wa_message_id for m in pending],
        )
        if skip_reason == budget.SPENT:
            conversation = _entity(session, conversation)
            texts = budget.turn_away(session, conversation, run, options, now)
            _add_outbox(session, conversation, run.id, texts, fallback=True, first_seq=0)
        return "again"
    step = _generate_step(session, conversation, run, settings, config,
                          newest=pending[-1].id)
    step.context.first_seq = 0  # a new run has no outbox rows yet
    return step


def _looping(session: Session, conversation_id: int, options: dict[str, Any],
             now: datetime, member: str | None = None, replies_sent: int | None = None) -> bool:
    """Whether the conversation had as many replies in the loop guard's window as it allows
    (`replies_sent`: the count for the whole conversation, when already read)."""
    most, minutes = options.get("loop_guard_replies"), options.get("loop_guard_minutes")
    if not most or not minutes:
        return False
    # Replies, not messages: one answer split into paragraphs is one reply.
    clauses = [
        Message.conversation_id == conversation_id,
        Message.role == "assistant",
        Message.status == "sent",
        Message.sent_at > now - timedelta(minutes=minutes),
    ]
    if member:
        # In a group, replies to this member: a busy group is not another bot.
        asked = Message.__table__.alias("asked")
        clauses.append(exists().where(
            asked.c.reply_run_id == Message.reply_run_id, asked.c.role == "customer",
            asked.c.extra["sender"].as_string() == member))
    if member:
        sent = session.scalar(
            select(func.count(func.distinct(Message.reply_run_id))).where(*clauses)) or 0
    elif replies_sent is not None:
        sent = replies_sent
    else:
        sent = session.connection().execute(_REPLIES_SENT, {
            "conversation_id": conversation_id, "since": now - timedelta(minutes=minutes),
        }).scalar() or 0
    return sent >= most


def _generate_step(
    session: Session, conversation: Conversation, run: ReplyRun, settings: Settings,
    config: WorkflowConfig | None = None, newest: int | None = None,
) -> _Generate:
    context = _llm_context(session, conversation, run, settings, config, newest)
    config = config or configs.get(session, context.config_id)
    send = dict(config.send or {})
    read_ids = [(wa_id, sender) for wa_id, sender in session.connection().execute(
        _READ_IDS, {"run_id": run.id}
    )] if context.options.get("mark_read") else []
    return _Generate(
        run.id, context, send=send, chat=conversation.chat_jid, read_ids=read_ids,
        to=messaging.recipient(conversation.chat_jid, conversation.contact_phone,
                               send.get("driver", "")),
    )


def _deliver_step(
    session: Session, conversation: Conversation, run: ReplyRun, rows: list[Message]
) -> _Deliver:
    config = configs.get(session, run.workflow_config_id)
    send = dict(config.send) if config else {}
    to = messaging.recipient(conversation.chat_jid, conversation.contact_phone,
                             send.get("driver", ""))
    return _Deliver(run.id, send, to,
                    [_Outgoing(m.id, m.content, m.wa_message_id or "") for m in rows],
                    option_values(config) if config else {})


@dataclass
class _Context:
    config_id: int
    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    # Where this run's outbox numbering starts (0 unless a replay left a fallback row).
    first_seq: int | None = None
    instance: str = ""
    # The customer messages this run answers, and what their media still need.
    burst: list[media.Item] = field(default_factory=list)
    # Whose conversation it is, as the business's tools are told.
    identity: business_tools.Identity | None = None


@dataclass
class _Draft:
    texts: list[str]
    effects: tools.Effects
    completions: list[Any] = field(default_factory=list)


def _llm_context(
    session: Session, conversation: Conversation, run: ReplyRun, settings: Settings,
    config: WorkflowConfig | None = None, newest: int | None = None,
) -> _Context:
    config = config or (
        configs.get(session, run.workflow_config_id)
    )
    if config is None:
        raise RuntimeError(f"run {run.id} has no workflow config")
    options = option_values(config)
    if newest is None:
        newest = session.scalar(
            select(func.max(Message.id))
            .where(Message.reply_run_id == run.id, Message.role == "customer")
        )
    limit = options.get("history_limit") or settings.history_limit
    rows = session.connection().execute(_HISTORY, {
        "conversation_id": conversation.id, "newest": newest or 0, "limit": limit,
    }).all()
    rows = _in_typed_order(_in_reply_order(session, [
        row for row in rows
        # The fallback of this very run is not part of what it answers (after a replay).
        if not (row.reply_run_id == run.id and (row.extra or {}).get("fallback"))
        # The business's resume keyword was said to the bot, not to the customer.
        and not (row.extra or {}).get("resume")
    ]))
    rows = _current_session(rows, options.get("session_idle_hours"))
    messages: list[dict[str, Any]] = []
    group = groups.is_group_chat(conversation.chat_jid)
    if config.system_prompt:
        # In a group, {contact_name} and {contact_phone} are the member who wrote last.
        who = groups.speaker(conversation, rows) if group else conversation
        messages.append({"role": "system",
                         "content": render_prompt(config.system_prompt, who, options)})
    burst: list[media.Item] = []
    for row in rows:
        content = media.describe(row) if row.media_type else row.content
        if row.role == "customer" and row.reply_run_id == run.id:
            burst.append(media.Item.of(row, len(messages), options, config.model,
                                       label=groups.sender_label(row) if group else ""))
        if row.role == "customer":
            if group:
                content = groups.attributed(row, content)
            messages.append({"role": "user", "content": content})
        elif row.role == "business":
            # Written by a person at the business on their phone: part of what "we" said.
            messages.append({"role": "assistant", "content": content, "name": "business"})
        else:
            messages.append({"role": "assistant", "content": content})
    if group:
        before = len(messages)
        groups.tell_the_model(messages, rows)
        for item in burst:  # a system note put in front of them moves them on
            item.index += len(messages) - before
    identity = business_tools.Identity(conversation.instance, conversation.id,
                                       conversation.chat_jid, conversation.contact_phone)
    return _Context(config.id, config.model, messages, options, instance=conversation.instance,
                    burst=burst, identity=identity)


def _in_reply_order(session: Session, rows: list[Message]) -> list[Message]:
    """Rows as the conversation went: each reply right after the burst it answered.

    Ids alone are not that order: a message that arrives while a reply is being generated is
    recorded before the reply is.
    """
    run_ids = {row.reply_run_id for row in rows if row.role != "customer" and row.reply_run_id}
    # The rows are the newest of the conversation: a run whose customer messages are among
    # them has its last one there too. Only runs older than the window need a query.
    burst_end: dict[int, int] = {}
    for row in rows:
        if row.role == "customer" and row.reply_run_id in run_ids:
            burst_end[row.reply_run_id] = max(burst_end.get(row.reply_run_id, 0), row.id)
    missing = run_ids - burst_end.keys()
    if missing:
        burst_end.update(session.execute(
            select(Message.reply_run_id, func.max(Message.id))
            .where(Message.reply_run_id.in_(missing), Message.role == "customer")
            .group_by(Message.reply_run_id)
        ).all())

    def position(row: Message) -> tuple[int, int, int]:
        if row.role == "customer" or row.reply_run_id not in burst_end:
            return row.id, 0, row.id
        return burst_end[row.reply_run_id], 1, row.id

    return sorted(rows, key=position)


def _in_typed_order(rows: list[Message]) -> list[Message]:
    """Each run of consecutive customer messages in the order the customer typed them.

    WuzAPI posts every message from its own goroutine and our workers record them in whatever
    order they commit, so a burst's ids say nothing; WhatsApp's timestamp does. Only within a
    run of customer messages: across our own replies, ids (one clock) are the truer order.
    """
    ordered: list[Message] = []
    burst: list[Message] = []
    for row in [*rows, None]:
        if row is not None and row.role == "customer":
            burst.append(row)
            continue
        burst.sort(key=_typed_at)
        ordered.extend(burst)
        burst = []
        if row is not None:
            ordered.append(row)
    return ordered


def _typed_at(row: Message) -> tuple[datetime, int]:
    raw = (row.extra or {}).get("timestamp")
    try:
        typed = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        typed = None
    if typed is None or typed.tzinfo is None:
        typed = row.created_at
    return typed, row.id


def _current_session(rows: list[Message], idle_hours: float | None) -> list[Message]:
    """The messages since the conversation last started afresh: after a reset keyword, or
    after a silence longer than `idle_hours`."""
    start = 0
    for index, row in enumerate(rows):
        if (row.extra or {}).get("reset"):
            start = index + 1
        elif index and idle_hours and (
            row.created_at - rows[index - 1].created_at > timedelta(hours=idle_hours)
        ):
            start = index
    return rows[start:]


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_PLACEHOLDER = re.compile(r"\{(contact_name|contact_phone|now|date|time|weekday)\}")


def render_prompt(template: str, conversation: Conversation, options: dict[str, Any]) -> str:
    """Fill {contact_name}, {contact_phone}, {now}, {date}, {time} and {weekday} (in the
    config's timezone); any other brace stays as written."""
    try:
        zone = ZoneInfo(options.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    now = utcnow().astimezone(zone)
    values = {
        # Written by the customer: data for the model, never instructions (zapreply.rules.text).
        "contact_name": quoted_name(conversation.contact_name),
        "contact_phone": conversation.contact_phone or "",
        "now": now.isoformat(timespec="minutes"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _generate(context: _Context, settings: Settings,
              effects: tools.Effects | None = None, deadline: float | None = None) -> _Draft:
    from zapreply.llm import chat as llm

    messages = list(context.messages)
    effects = effects if effects is not None else tools.Effects(
        max_messages=settings.max_messages_per_run)
    if deadline is None:
        deadline = time.monotonic() + business_tools.time_budget(settings)
    business = business_tools.Toolbox(
        context.options.get("tools"), budget_seconds=deadline - time.monotonic(),
        identity=context.identity, private_hosts=context.options.get("tool_private_hosts"))
    completions = []
    final = ""
    for _round in range(settings.max_tool_rounds + 1):
        completion = llm.complete(
            model=context.model,
            messages=messages,
            tools=tools.SCHEMAS + business.schemas,
            timeout=settings.llm_timeout_seconds,
            temperature=context.options.get("temperature"),
            max_tokens=context.options.get("max_tokens"),
        )
        completions.append(completion)
        final = completion.content
        if not completion.tool_calls:
            break
        messages.append(completion.as_message())
        for call in completion.tool_calls:
            result = tools.execute(call.name, call.arguments, effects, business)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    # When the model used send_whatsapp, those messages are the reply; its closing text is
    # commentary for us ("I sent it"), not for the customer.
    if effects.messages:
        texts = list(effects.messages)
    else:
        texts = [final.strip()] if final.strip() else []
    return _Draft(texts=texts, effects=effects, completions=completions)


def outbound_message_id(instance: str, run_id: int, seq: int) -> str:
    """Deterministic, WhatsApp-shaped id: a repeated send of the same row is the same message."""
    digest = hashlib.sha256(f"{instance}|{run_id}|{seq}".encode()).hexdigest()
    return "3EB0" + digest[:18].upper()


def _close_sent_run(
    session: Session, conversation_id: int, token: int, run_id: int, settings: Settings,
    finished: list[int],
) -> _Step:
    """Every row of the run went out: close it, and stop here unless more came in meanwhile."""
    connection = session.connection()
    closed = connection.execute(
        _CLOSE_SENT_RUN, {"run_id": run_id, "finished_at": utcnow()}).rowcount
    finished[0] += closed
    more = connection.execute(_MORE_WAITING, {"conversation_id": conversation_id}).scalar()
    if more or not closed:
        if not leases.renew(session, conversation_id, token, settings.lease_seconds):
            raise leases.LeaseLost(f"conversation {conversation_id}: lease lost after a send")
        return _plan(session, conversation_id, token, settings, finished)
    # Released only if still ours; if not, whoever holds it now finds nothing left to do.
    leases.release_conversation(session, conversation_id, token)
    return None


def _record_last_send(
    conversation_id: int, token: int, run_id: int, row: _Outgoing, provider_id: str | None,
    settings: Settings, finished: list[int],
) -> _Step:
    """What `_MARK_SENT`, its event and `_close_sent_run` do, in one statement
    (`_LAST_SEND`): the common end of every reply, on PostgreSQL. One statement is atomic by
    itself, so it runs in autocommit (no BEGIN and COMMIT round trips); only when more is
    waiting does a transaction follow, to renew the lease and plan the next step."""
    with autocommit() as connection:
        outcome = connection.execute(_LAST_SEND, {
            "row_id": row.row_id, "provider_id": provider_id, "sent_at": utcnow(),
            "conversation_id": conversation_id, "run_id": run_id, "token": token,
            "event_type": events.MESSAGE_SENT,
            "payload": {"message_id": row.row_id, "provider_message_id": provider_id},
        }).one()
    finished[0] += int(outcome.closed)
    if outcome.closed and not outcome.more:
        return None  # released, if the lease was still ours
    with session_scope() as session:
        if not leases.renew(session, conversation_id, token, settings.lease_seconds):
            raise leases.LeaseLost(f"conversation {conversation_id}: lease lost after a send")
        return _plan(session, conversation_id, token, settings, finished)


def _generate_and_store(
    conversation_id: int, token: int, step: _Generate, settings: Settings, finished: list[int]
) -> _Step:
    from zapreply.llm.chat import LLMError  # only workers import litellm

    options = step.context.options
    if options.get("mark_read"):
        messaging.mark_read(step.send, chat=step.chat, messages=step.read_ids,
                            timeout=settings.send_timeout_seconds)
    if options.get("typing_indicator"):
        messaging.set_typing(step.send, to=step.to, typing=True,
                             timeout=settings.send_timeout_seconds)
    effects = tools.Effects(max_messages=settings.max_messages_per_run)
    # Media work and business tools share one deadline: what the task time limit leaves after
    # the LLM calls.
    deadline = time.monotonic() + business_tools.time_budget(settings)
    try:
        instead = media.resolve(step.context.messages, step.context.burst,
                                options=options, send=step.send, settings=settings,
                                conversation_id=conversation_id, run_id=step.run_id,
                                deadline=deadline)
    except media.MediaFailed as exc:
        if options.get("typing_indicator"):
            messaging.set_typing(step.send, to=step.to, typing=False,
                                 timeout=settings.send_timeout_seconds)
        return _fail_media(conversation_id, token, step.run_id, settings, exc, finished)
    try:
        # Nothing in the burst the model could understand: the config's media fallback text.
        draft = _Draft([instead], effects) if instead is not None \
            else _generate(step.context, settings, effects, deadline)
    except LLMError as exc:
        _record_discarded_calls(conversation_id, token, step.run_id, settings, effects)
        if options.get("typing_indicator"):
            messaging.set_typing(step.send, to=step.to, typing=False,
                                 timeout=settings.send_timeout_seconds)
        return _fail_attempt(conversation_id, token, step.run_id, settings, events.LLM_FAILED,
                             exc, permanent=exc.permanent, retry_after=exc.retry_after,
                             budget=settings.llm_max_attempts, finished=finished)
    rows = _store_plain_reply(conversation_id, token, step, draft, settings)
    if rows is not None:
        return _Deliver(step.run_id, step.send, step.to, rows, step.context.options)
    with session_scope() as session:
        written = _fence_and_record_llm_events(session, conversation_id, token, step.run_id,
                                               draft, settings)
        rows = _store_draft(session, conversation_id, step.run_id, step.context, draft,
                            llm_events_written=written)
        budget.record_usage(session, step.context.config_id, options, draft.completions,
                            utcnow())
        if rows:
            return _Deliver(step.run_id, step.send, step.to, rows, step.context.options)
        following = _plan(session, conversation_id, token, settings, finished)
    if options.get("typing_indicator") and not isinstance(following, _Deliver):
        # Nothing to send (a handoff without handoff_text): "typing…" must not linger.
        messaging.set_typing(step.send, to=step.to, typing=False,
                             timeout=settings.send_timeout_seconds)
    return following


def _record_discarded_calls(conversation_id: int, token: int, run_id: int, settings: Settings,
                            effects: tools.Effects) -> None:
    """Business tools called by a generation that then failed did reach their endpoints: the
    events say so (`discarded`), though the draft they served is dropped and retried."""
    calls = [call for call in effects.calls if "details" in call]
    if not calls:
        return
    with session_scope() as session:
        leases.fence(session, conversation_id, token, settings.lease_seconds)
        for call in calls:
            events.record(session, events.TOOL_CALLED, conversation_id=conversation_id,
                          run_id=run_id, name=call["name"], arguments=call["arguments"],
                          result=call["result"][:business_tools.EVENT_RESULT_CHARS],
                          discarded=True, **call["details"])


def _llm_events(draft: _Draft) -> list[dict[str, Any]]:
    """The payload of each completion's `llm.completed` event."""
    return [
        {"model": completion.model, "round": round_number,
         "prompt_tokens": completion.prompt_tokens,
         "completion_tokens": completion.completion_tokens,
         "cost": completion.cost, "latency_ms": completion.latency_ms,
         "tool_calls": [c.name for c in completion.tool_calls]}
        for round_number, completion in enumerate(draft.completions)
    ]


# PostgreSQL: the lease fenced and the run's `llm.completed` events written in one round trip
# instead of one per statement. Nothing is written unless the lease is still ours.
_FENCE_AND_EVENTS = """
WITH renewed AS (
    UPDATE conversations SET lease_expires_at = :expires_at, updated_at = :now
    WHERE id = :conversation_id AND lease_token = :token
    RETURNING id
), written AS (
    INSERT INTO events (type, conversation_id, run_id, payload, created_at)
    SELECT :event_type, :conversation_id, :run_id, event.payload, :now
    FROM renewed, jsonb_array_elements(:payloads) WITH ORDINALITY AS event(payload, n)
    ORDER BY event.n
)"""
_FENCE_AND_EVENTS_TYPES = (
    bindparam("payloads", type_=Event.__table__.c.payload.type),
    bindparam("now", type_=_conversations.c.updated_at.type),
    bindparam("expires_at", type_=_conversations.c.lease_expires_at.type),
)
_FENCE_WITH_EVENTS = text(_FENCE_AND_EVENTS + """
SELECT count(*) FROM renewed
""").bindparams(*_FENCE_AND_EVENTS_TYPES)


def _fence_params(conversation_id: int, token: int, run_id: int, draft: _Draft,
                  settings: Settings) -> dict[str, Any]:
    """`_FENCE_AND_EVENTS`'s parameters: the lease renewed for another `LEASE_SECONDS`."""
    now = utcnow()
    return {
        "conversation_id": conversation_id, "token": token, "run_id": run_id, "now": now,
        "expires_at": now + timedelta(seconds=settings.lease_seconds),
        "event_type": events.LLM_COMPLETED, "payloads": _llm_events(draft),
    }


def _fence_and_record_llm_events(session: Session, conversation_id: int, token: int,
                                 run_id: int, draft: _Draft, settings: Settings) -> bool:
    """`leases.fence` plus the draft's `llm.completed` events, in one statement on PostgreSQL.
    Says whether the events were written (elsewhere `_store_draft` writes them)."""
    if session.get_bind().dialect.name != "postgresql":
        leases.fence(session, conversation_id, token, settings.lease_seconds)
        return False
    renewed = session.connection().execute(
        _FENCE_WITH_EVENTS, _fence_params(conversation_id, token, run_id, draft, settings),
    ).scalar()
    if not renewed:
        raise leases.LeaseLost(f"conversation {conversation_id}: lease token {token} superseded")
    return True


# PostgreSQL, the common reply (text only: no tool call, handoff, media or budget): what
# `_FENCE_AND_EVENTS` writes and the outbox rows, by one statement, which is atomic by itself and
# so runs in autocommit. Nothing is written unless the lease is still ours.
_STORE_PLAIN_REPLY = text(_FENCE_AND_EVENTS + """, outbox AS (
    INSERT INTO messages (conversation_id, instance, role, content, wa_message_id,
                          reply_run_id, status, seq, extra, created_at)
    SELECT :conversation_id, :instance, 'assistant', row.content, row.wa_message_id,
           :run_id, 'pending', row.seq, '{}'::jsonb, :now
    FROM renewed, jsonb_to_recordset(:rows) AS row(content text, wa_message_id text, seq int)
    ORDER BY row.seq
    RETURNING id, seq
)
SELECT (SELECT count(*) FROM renewed) AS renewed,
       ARRAY(SELECT id FROM outbox ORDER BY seq) AS ids
""").bindparams(*_FENCE_AND_EVENTS_TYPES, bindparam("rows", type_=_messages.c.extra.type))


def _store_plain_reply(conversation_id: int, token: int, step: _Generate, draft: _Draft,
                       settings: Settings) -> list[_Outgoing] | None:
    """What `_fence_and_record_llm_events` and `_store_draft` store for a reply that is only
    text, in one statement (`_STORE_PLAIN_REPLY`); the outbox rows to deliver. None when the
    draft needs more (see `_store_draft`), or off PostgreSQL: nothing was written then."""
    context = step.context
    texts = _reply_texts(draft.texts, context.options)
    if (not texts or context.first_seq is None or draft.effects.calls
            or len(texts) > settings.max_messages_per_run  # its event: see _store_draft
            or draft.effects.handoff_reason is not None
            or any(item.media_type for item in context.burst)
            or budget.has_budget(context.options)
            or get_engine().dialect.name != "postgresql"):
        return None
    rows = [_Outgoing(0, text, outbound_message_id(context.instance, step.run_id, seq))
            for seq, text in enumerate(texts, start=context.first_seq)]
    with autocommit() as connection:
        stored = connection.execute(_STORE_PLAIN_REPLY, {
            **_fence_params(conversation_id, token, step.run_id, draft, settings),
            "instance": context.instance,
            "rows": [{"content": row.text, "wa_message_id": row.message_id, "seq": seq}
                     for seq, row in enumerate(rows, start=context.first_seq)],
        }).one()
    if not stored.renewed:
        raise leases.LeaseLost(f"conversation {conversation_id}: lease token {token} superseded")
    return [_Outgoing(row_id, row.text, row.message_id)
            for row_id, row in zip(stored.ids, rows, strict=True)]


def _reply_texts(texts: list[str], options: dict[str, Any],
                 most: int | None = None) -> list[str]:
    """The messages to send for the model's texts: split at blank lines if the config says so
    (several short messages read like a person; one wall of text does not), and no more than
    `most` of them."""
    if options.get("split_paragraphs"):
        texts = [part.strip() for text in texts for part in _PARAGRAPH_BREAK.split(text)
                 if part.strip()]
    else:
        texts = list(texts)
    if most is not None and len(texts) > most:
        # Joined into the last message rather than dropped: what comes last is usually the
        # point of the answer (the price, the next step, the handoff text), and the customer
        # still gets all of it, in fewer messages.
        texts = [*texts[:most - 1], "\n\n".join(texts[most - 1:])]
    return texts


def _store_draft(
    session: Session, conversation_id: int, run_id: int, context: _Context, draft: _Draft,
    *, llm_events_written: bool = False,
) -> list[_Outgoing]:
    """Store what the run produced; return the outbox rows to deliver (none when it ends
    without a message: a silent handoff, or a failure)."""
    if any(item.media_type for item in context.burst):
        media.forget_inline(session, run_id)
    if not llm_events_written:
        for payload in _llm_events(draft):
            events.record(session, events.LLM_COMPLETED, conversation_id=conversation_id,
                          run_id=run_id, **payload)
    for call in draft.effects.calls:
        events.record(session, events.TOOL_CALLED, conversation_id=conversation_id,
                      run_id=run_id, name=call["name"], arguments=call["arguments"],
                      result=call["result"][:business_tools.EVENT_RESULT_CHARS],
                      **call.get("details", {}))
        session.add(Message(
            conversation_id=conversation_id, instance=context.instance, role="tool",
            content=call["result"], reply_run_id=run_id,
            extra={"name": call["name"], "arguments": call["arguments"]},
        ))
    texts = list(draft.texts)
    if draft.effects.handoff_reason is not None:
        conversation = session.get(Conversation, conversation_id)
        conversations.pause(session, conversation, reason="handoff to human", until=None,
                            actor="assistant")
        events.record(session, events.HANDOFF_REQUESTED, conversation_id=conversation_id,
                      run_id=run_id, reason=draft.effects.handoff_reason)
        if context.options.get("handoff_text"):
            texts.append(context.options["handoff_text"])
        if not texts:
            # Handed over with nothing to say: the run is done.
            run = session.get(ReplyRun, run_id)
            run.status = "sent"
            run.finished_at = utcnow()
            return []
    if not texts:
        _close_failed(session, session.get(ReplyRun, run_id), conversation_id,
                      "the model produced no reply", context.options)
        return []
    most = get_settings().max_messages_per_run
    split = _reply_texts(texts, context.options)
    if len(split) > most or draft.effects.refused_messages:
        events.record(session, events.REPLY_CAPPED, conversation_id=conversation_id,
                      run_id=run_id, limit=most, refused_sends=draft.effects.refused_messages,
                      joined_messages=len(split) - most + 1 if len(split) > most else 0)
    texts = _reply_texts(texts, context.options, most)
    return _add_outbox(session, _ConversationRef(conversation_id, context.instance), run_id,
                       texts, first_seq=context.first_seq)


@dataclass(frozen=True)
class _ConversationRef:
    id: int
    instance: str


def _add_outbox(session: Session, conversation: Conversation | _ConversationRef, run_id: int,
                texts: list[str], *, fallback: bool = False, first_seq: int | None = None,
                extra: dict[str, Any] | None = None) -> list[_Outgoing]:
    """Insert the outbox rows (Core, one statement) and return them, with their ids."""
    # Rows added through the ORM in this transaction (tool calls) keep the lower ids.
    session.flush()
    # After a replay the run may already hold a sent fallback row: number on from it, since
    # the message id is derived from the position.
    start = first_seq if first_seq is not None else session.connection().execute(
        _NEXT_SEQ, {"run_id": run_id}).scalar()
    now = utcnow()
    values = [
        {
            "conversation_id": conversation.id, "instance": conversation.instance,
            "role": "assistant", "content": text, "reply_run_id": run_id, "status": "pending",
            "seq": seq, "wa_message_id": outbound_message_id(conversation.instance, run_id, seq),
            "extra": {**(extra or {}), **({"fallback": True} if fallback else {})},
            "created_at": now,
        }
        for seq, text in enumerate(texts, start=start)
    ]
    if not values:
        return []
    ids = session.connection().execute(_ADD_OUTBOX, values).scalars().all()
    return [_Outgoing(row_id, row["content"], row["wa_message_id"])
            for row_id, row in zip(ids, values, strict=True)]


def _close_failed(session: Session, run: ReplyRun, conversation_id: int, reason: str,
                  options: dict[str, Any]) -> None:
    run.status = "failed"
    run.error = reason
    run.finished_at = utcnow()
    events.record(session, events.RUN_FAILED, conversation_id=conversation_id, run_id=run.id,
                  reason=reason, attempts=run.attempts)
    fallback = options.get("fallback_text")
    has_outbox = session.scalar(
        select(Message.id).where(Message.reply_run_id == run.id, Message.role == "assistant")
        .limit(1)
    ) is not None
    if fallback and not has_outbox:
        conversation = session.get(Conversation, conversation_id)
        _add_outbox(session, conversation, run.id, [fallback], fallback=True)


def _fail_attempt(
    conversation_id: int, token: int, run_id: int, settings: Settings, event_type: str,
    exc: Exception, *, permanent: bool, budget: int, finished: list[int],
    retry_after: float | None = None, row_id: int | None = None, status: int | None = None,
) -> _Step:
    """Record a failed attempt. Close the run when retrying cannot help (and plan what comes
    next, e.g. its fallback text); otherwise keep it open and raise RetryLater."""
    with session_scope() as session:
        leases.fence(session, conversation_id, token, settings.lease_seconds)
        run = session.get(ReplyRun, run_id)
        run.attempts += 1
        gives_up = permanent or run.attempts >= budget
        details: dict[str, Any] = {"message_id": row_id, "status": status} if row_id else {}
        events.record(session, event_type, conversation_id=conversation_id, run_id=run_id,
                      error=str(exc), permanent=permanent, attempt=run.attempts,
                      will_retry=not gives_up, **details)
        if gives_up:
            if row_id is not None:
                # Nothing else of this run can be delivered either (a fallback would go the
                # same way), so every row still pending fails with it.
                session.execute(
                    update(Message)
                    .where(Message.reply_run_id == run_id, Message.status == "pending")
                    .values(status="failed")
                )
                if run.status == "running":
                    run.status = "failed"
                    run.error = str(exc)
                    run.finished_at = utcnow()
                    events.record(session, events.RUN_FAILED, conversation_id=conversation_id,
                                  run_id=run_id, reason=str(exc), attempts=run.attempts)
            else:
                config = configs.get(session, run.workflow_config_id)
                _close_failed(session, run, conversation_id, str(exc),
                              option_values(config) if config else {})
            session.flush()
            return _plan(session, conversation_id, token, settings, finished)
        delay = backoff(settings, run.attempts, retry_after)
        run.next_attempt_at = utcnow() + timedelta(seconds=delay)
    raise RetryLater(str(exc), delay)


def _fail_media(
    conversation_id: int, token: int, run_id: int, settings: Settings, exc: media.MediaFailed,
    finished: list[int],
) -> _Step:
    """A message's media could not be fetched or transcribed: retry after a backoff, or, once
    its attempts are spent, answer the burst with that message described as not understood."""
    with session_scope() as session:
        leases.fence(session, conversation_id, token, settings.lease_seconds)
        attempt = media.record_failure(session, exc, conversation_id=conversation_id,
                                       run_id=run_id, budget=settings.llm_max_attempts)
        if attempt is None:
            session.flush()
            return _plan(session, conversation_id, token, settings, finished)
        delay = backoff(settings, attempt, exc.retry_after)
        session.get(ReplyRun, run_id).next_attempt_at = utcnow() + timedelta(seconds=delay)
    raise RetryLater(str(exc), delay)


def _deliver(
    conversation_id: int, token: int, step: _Deliver, settings: Settings, finished: list[int]
) -> _Step:
    typing = bool(step.options.get("typing_indicator"))
    try:
        return _deliver_rows(conversation_id, token, step, settings, finished, typing)
    except BaseException:
        # A delivered message clears "typing…" in WhatsApp by itself; a failed one does not.
        if typing:
            messaging.set_typing(step.send, to=step.to, typing=False,
                                 timeout=settings.send_timeout_seconds)
        raise


def _deliver_rows(
    conversation_id: int, token: int, step: _Deliver, settings: Settings, finished: list[int],
    typing: bool,
) -> _Step:
    per_char = float(step.options.get("typing_ms_per_char") or 0) / 1000
    cap = float(step.options.get("typing_max_seconds") or 0)
    for index, row in enumerate(step.rows):
        if per_char and cap:
            # As if someone typed it: "typing…" for a time that grows with the text.
            if typing:
                messaging.set_typing(step.send, to=step.to, typing=True,
                                     timeout=settings.send_timeout_seconds)
            time.sleep(min(len(row.text) * per_char, cap))
        try:
            provider_id = messaging.send_text(step.send, to=step.to, text=row.text,
                                              message_id=row.message_id,
                                              timeout=settings.send_timeout_seconds)
        except messaging.SendError as exc:
            return _fail_attempt(conversation_id, token, step.run_id, settings,
                                 events.MESSAGE_FAILED, exc, permanent=exc.permanent,
                                 budget=settings.send_max_attempts, finished=finished,
                                 row_id=row.row_id, status=exc.status)
        last = index == len(step.rows) - 1
        if last and get_engine().dialect.name == "postgresql":
            return _record_last_send(conversation_id, token, step.run_id, row, provider_id,
                                     settings, finished)
        with session_scope() as session:
            # The send happened: record it whatever became of the lease meanwhile.
            session.connection().execute(_MARK_SENT, {
                "row_id": row.row_id, "provider_id": provider_id, "sent_at": utcnow()})
            events.record(session, events.MESSAGE_SENT, conversation_id=conversation_id,
                          run_id=step.run_id, message_id=row.row_id,
                          provider_message_id=provider_id)
            if last:
                return _close_sent_run(session, conversation_id, token, step.run_id, settings,
                                       finished)
            still_ours = leases.renew(session, conversation_id, token, settings.lease_seconds)
        if not still_ours:
            raise leases.LeaseLost(f"conversation {conversation_id}: lease lost after a send")
    return None  # pragma: no cover - the last row returns above
