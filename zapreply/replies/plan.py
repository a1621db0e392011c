"""What to do next for a conversation whose lease this transaction holds.

In order: deliver replies already written (a run's outbox rows, or its fallback text); resume
a run left open (a retry, a crash, a replay); open a run for the customer messages no run has
taken (a burst), or skip it with its reason (paused, loop guard, closed, budget spent). Some
decisions change what is waiting without giving a step (a run found answered and closed, a
run skipped, an away message queued): the planner then decides again, in the same
transaction. `Wait` and `Done` are decided in a transaction that also gives up the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, exists, func, select
from sqlalchemy.orm import Session

from zapreply.channel import messaging
from zapreply.replies import leases, media, outbox, prompt
from zapreply.replies.steps import (
    Deliver,
    Done,
    Generate,
    Next,
    Outgoing,
    RunContext,
    Step,
    Target,
    Wait,
)
from zapreply.rules import budget, configs, conversations, groups, hours
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.storage import events, runs
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    Message,
    OutboxStatus,
    ReplyRun,
    Role,
    RunStatus,
    WorkflowConfig,
    extra_of,
    utcnow,
)


@dataclass(frozen=True)
class _Replan:
    """What is waiting changed without giving a step: decide again (`finished`: a run closed
    as answered on the way)."""

    finished: int = 0


@dataclass(frozen=True)
class _RunRef:
    """A run opened in this transaction: what the next steps read of it."""

    id: int
    workflow_config_id: int | None


@dataclass(frozen=True)
class _Seen:
    """What the planner read of the conversation, once per decision."""

    conversation: Conversation | Row[Any]
    config: WorkflowConfig | None
    options: Options
    now: datetime


@dataclass(frozen=True)
class _Skip:
    """Why a burst gets no model call (None: it does), and the opening hours it came outside."""

    reason: str | None = None
    closed: hours.Closed | None = None


def plan(session: Session, run: RunContext, claimed: Row[Any] | None = None) -> Next:
    """The next step for the run's conversation (`claimed`: its row as the claim returned it,
    if nothing changed it since)."""
    finished = 0
    while True:
        decided = _decide(session, run, claimed)
        claimed = None
        if isinstance(decided, _Replan):
            finished += decided.finished
            continue
        if isinstance(decided, Wait | Done):
            leases.release_conversation(session, run.conversation_id, run.token)
        return Next(decided, finished)


def _decide(session: Session, run: RunContext,
            conversation: Conversation | Row[Any] | None) -> Step | _Replan:
    session.flush()  # what the ORM changed must be seen by the Core reads below
    connection = session.connection()
    if conversation is None:
        conversation = connection.execute(
            runs.CONVERSATION, {"conversation_id": run.conversation_id}).first()
        if conversation is None:
            return Done()
    now = utcnow()
    config = configs.get(session, conversation.workflow_config_id)
    options = options_of(config) if config else Options()
    # What is waiting: outbox rows not confirmed sent, and customer messages no run has taken
    # (one query for both, which also brings the open run and the loop guard's count).
    waiting = connection.execute(runs.WAITING, {
        "conversation_id": run.conversation_id,
        "since": now - timedelta(minutes=options.loop_guard_minutes or 0),
    }).all()

    # Replies already written but not confirmed sent go first, in order (this includes the
    # fallback text of a run that failed).
    undelivered = sorted((m for m in waiting if m.role == Role.ASSISTANT),
                         key=lambda m: (m.reply_run_id or 0, m.seq or 0))
    seen = _Seen(conversation, config, options, now)
    if undelivered:
        return _deliver_undelivered(session, seen, undelivered)
    open_id = waiting[0].open_run_id if waiting else connection.execute(
        runs.RUNNING, {"conversation_id": run.conversation_id}).scalar()
    if open_id is not None:
        return _resume(session, run, seen, session.get(ReplyRun, open_id))
    pending = [m for m in waiting if m.role == Role.CUSTOMER]
    if not pending:
        return Done()
    return _open(session, run, seen, pending)


def _deliver_undelivered(session: Session, seen: _Seen,
                         undelivered: list[Row[Any]]) -> Wait | Deliver:
    now = seen.now
    reply_run = session.get(ReplyRun, undelivered[0].reply_run_id)
    # A backoff, or a paced send (zapreply.replies.pacing): a closed run's text waits too.
    if reply_run.next_attempt_at and reply_run.next_attempt_at > now:
        return Wait((reply_run.next_attempt_at - now).total_seconds())
    config = _config_of(session, seen.config, reply_run.workflow_config_id)
    send = dict(config.send) if config else {}
    return Deliver(reply_run.id, _target(seen.conversation, send),
                   [Outgoing(m.id, m.content, m.wa_message_id or "")
                    for m in undelivered if m.reply_run_id == reply_run.id],
                   options_of(config) if config else Options(), seen.conversation.instance)


def _resume(session: Session, run: RunContext, seen: _Seen,
            reply_run: ReplyRun) -> Wait | Generate | _Replan:
    """A run left open (a retry, a crash, a replay)."""
    now = seen.now
    if reply_run.next_attempt_at is not None and reply_run.next_attempt_at > now:
        return Wait((reply_run.next_attempt_at - now).total_seconds())
    # A fallback text sent by an earlier failed attempt is not an answer (see replay).
    answered = session.scalar(
        select(Message.id).where(
            Message.reply_run_id == reply_run.id, Message.role == Role.ASSISTANT,
            Message.extra["fallback"].as_boolean().is_not(True),
        ).limit(1)
    ) is not None
    if answered:
        reply_run.status = RunStatus.SENT
        reply_run.finished_at = now
        return _Replan(finished=1)
    if conversations.is_paused(seen.conversation, now):
        # A person took the conversation over while this run waited for a retry: the bot
        # must not answer after them.
        reply_run.status = RunStatus.SKIPPED
        reply_run.error = "conversation paused"
        reply_run.finished_at = now
        events.record(session, EventType.MESSAGE_IGNORED, conversation_id=run.conversation_id,
                      run_id=reply_run.id, reason="conversation paused")
        return _Replan()
    config = _config_of(session, seen.config, reply_run.workflow_config_id)
    if config is None:
        raise RuntimeError(f"run {reply_run.id} has no workflow config")
    return _generate(session, run, seen.conversation, reply_run.id, config)


def _open(session: Session, run: RunContext, seen: _Seen,
          pending: list[Row[Any]]) -> Wait | Generate | _Replan:
    """Open a run for the burst `pending` (customer messages no run has taken)."""
    conversation, config, now = seen.conversation, seen.config, seen.now
    skip = _why_not_answer(session, seen, pending)
    if isinstance(skip, Wait):
        return skip
    config_id = config.id if config else None
    reply_run = _RunRef(runs.open_run(session.connection(), {
        "conversation_id": run.conversation_id,
        "workflow_config_id": config_id,
        "status": RunStatus.SKIPPED if skip.reason else RunStatus.RUNNING,
        "attempts": 0,
        "next_attempt_at": None,
        "error": skip.reason,
        "created_at": now,
        "finished_at": now if skip.reason else None,
    }, [m.id for m in pending]), config_id)
    if skip.reason or skip.closed is not None:
        _not_answered(session, run, seen, reply_run, skip, pending)
        return _Replan()
    # A new run has no outbox rows yet: its numbering starts at 0.
    return _generate(session, run, conversation, reply_run.id, config, newest=pending[-1].id,
                     first_seq=0)


def _not_answered(session: Session, run: RunContext, seen: _Seen, reply_run: _RunRef,
                  skip: _Skip, pending: list[Row[Any]]) -> None:
    """The burst gets no model call: its inline media dropped, and the away message, or the
    reason it was skipped (and the budget's turn-away texts), recorded."""
    for message in pending:
        if message.media_type:
            media.drop_inline(session.get(Message, message.id))
    if skip.closed is not None and skip.closed.away_text is not None:
        # Sent like any reply (outbox row, deterministic id, delivered first when planning
        # again); the customer's messages stay in the history for when the business opens.
        away = outbox.add(session, seen.conversation, reply_run.id, [skip.closed.away_text],
                          extra={"away": True})
        events.record(session, EventType.AWAY_QUEUED, conversation_id=run.conversation_id,
                      run_id=reply_run.id, closed_since=skip.closed.since.isoformat(),
                      message_ids=[row.row_id for row in away],
                      wa_message_ids=[m.wa_message_id for m in pending])
        return
    events.record(
        session, EventType.MESSAGE_IGNORED, conversation_id=run.conversation_id,
        run_id=reply_run.id, reason=skip.reason,
        wa_message_ids=[m.wa_message_id for m in pending],
    )
    if skip.reason == budget.SPENT:
        entity = _entity(session, seen.conversation)
        texts = budget.turn_away(session, entity, reply_run, seen.options, seen.now)
        outbox.add(session, entity, reply_run.id, texts, fallback=True, first_seq=0)


def _why_not_answer(session: Session, seen: _Seen, pending: list[Row[Any]]) -> Wait | _Skip:
    """Whether the burst is to be answered now, later (`Wait`), or not by the model."""
    conversation, config, options, now = seen.conversation, seen.config, seen.options, seen.now
    if conversations.pause_expired(conversation, now):
        conversation = _entity(session, conversation)
        conversations.end_expired_pause(session, conversation, now)  # its event, once
    if config is None or not config.is_active:
        return _Skip("no active workflow config")
    if conversations.is_paused(conversation, now):
        return _Skip("conversation paused")
    if _looping(session, conversation.id, options, now,
                member=extra_of(pending[-1]).get("sender")
                if groups.is_group_chat(conversation.chat_jid) else None,
                replies_sent=pending[0].replies_sent):
        # Another bot is probably answering ours: stop before the costs run away.
        conversations.pause(session, _entity(session, conversation), reason="loop guard",
                            until=None, actor="loop guard")
        return _Skip("loop guard")
    ready_at = pending[-1].created_at + timedelta(seconds=config.debounce_seconds)
    if ready_at > now:
        return Wait((ready_at - now).total_seconds())
    # Opening hours, judged when the burst arrived: outside them no model call, at most the
    # away message (zapreply.rules.hours).
    closed = hours.closed_for(
        session, conversation.id, pending[-1].created_at, schedule=options.opening_hours,
        outside_hours=options.outside_hours, timezone=options.timezone,
        away_message=options.away_message)
    if closed is not None and closed.away_text is None:
        return _Skip("outside opening hours", closed)
    if closed is None and budget.is_spent(session, config.id, options, now):
        return _Skip(budget.SPENT)
    return _Skip(None, closed)


def _looping(session: Session, conversation_id: int, options: Options,
             now: datetime, member: str | None = None, replies_sent: int | None = None) -> bool:
    """Whether the conversation had as many replies in the loop guard's window as it allows
    (`replies_sent`: the count for the whole conversation, when already read)."""
    most, minutes = options.loop_guard_replies, options.loop_guard_minutes
    if not most or not minutes:
        return False
    since = now - timedelta(minutes=minutes)
    if member:
        # Replies, not messages: one answer split into paragraphs is one reply. In a group,
        # replies to this member: a busy group is not another bot.
        asked = Message.__table__.alias("asked")
        sent = session.scalar(
            select(func.count(func.distinct(Message.reply_run_id))).where(
                Message.conversation_id == conversation_id,
                Message.role == Role.ASSISTANT,
                Message.status == OutboxStatus.SENT,
                Message.sent_at > since,
                exists().where(
                    asked.c.reply_run_id == Message.reply_run_id, asked.c.role == Role.CUSTOMER,
                    asked.c.extra["sender"].as_string() == member),
            )) or 0
    elif replies_sent is not None:
        sent = replies_sent
    else:
        sent = session.connection().execute(runs.REPLIES_SENT, {
            "conversation_id": conversation_id, "since": since}).scalar() or 0
    return sent >= most


def _generate(
    session: Session, run: RunContext, conversation: Conversation | Row[Any],
    run_id: int, config: WorkflowConfig, *, newest: int | None = None,
    first_seq: int | None = None,
) -> Generate:
    asked = prompt.build(session, conversation, run_id, config, run.settings,
                         newest=newest, first_seq=first_seq)
    read_ids = [(wa_id, sender) for wa_id, sender in session.connection().execute(
        runs.READ_IDS, {"run_id": run_id}
    )] if asked.options.mark_read else []
    return Generate(run_id, asked, _target(conversation, dict(config.send or {})),
                    chat=conversation.chat_jid, read_ids=read_ids)


def _target(conversation: Conversation | Row[Any], send: dict[str, Any]) -> Target:
    return Target(send, messaging.recipient(conversation.chat_jid, conversation.contact_phone,
                                            send.get("driver", "")))


def _config_of(session: Session, config: WorkflowConfig | None,
               config_id: int | None) -> WorkflowConfig | None:
    """A run's config: the conversation's, already read, unless the run has another."""
    if config is not None and config.id == config_id:
        return config
    return configs.get(session, config_id)


def _entity(session: Session, conversation: Conversation | Row[Any]) -> Conversation:
    """The conversation as an ORM object, to change it (it is read as a row)."""
    if isinstance(conversation, Conversation):
        return conversation
    return session.get(Conversation, conversation.id)
