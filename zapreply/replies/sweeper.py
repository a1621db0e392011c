"""Finding conversations nobody is answering any more, so a worker can pick them up.

The broker normally delivers every reply task; this covers what it cannot: a worker killed in
the middle of a run (its lease expires, nobody holds the run), a task lost with a broker that
kept nothing on disk, a retry whose task vanished. Every worker sweeps; enqueuing a reply twice
is harmless, because the lease lets one in and the other finds nothing to do.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import (
    Conversation,
    Message,
    OutboxStatus,
    ReplyRun,
    Role,
    RunStatus,
    utcnow,
)

log = logging.getLogger(__name__)


def stranded_conversations(
    session: Session, now: datetime, grace_seconds: float, limit: int = 200
) -> list[int]:
    """Conversations with nobody holding the lease and work older than the grace period: an
    open run past its backoff, a customer message no run has taken, or a closed run's text
    not yet sent (and not paced to later)."""
    cutoff = now - timedelta(seconds=grace_seconds)
    open_run = exists().where(
        ReplyRun.conversation_id == Conversation.id,
        ReplyRun.status == RunStatus.RUNNING,
        or_(
            and_(ReplyRun.next_attempt_at.is_(None), ReplyRun.created_at < cutoff),
            ReplyRun.next_attempt_at < cutoff,
        ),
    )
    unanswered = exists().where(
        Message.conversation_id == Conversation.id,
        Message.role == Role.CUSTOMER,
        Message.reply_run_id.is_(None),
        Message.created_at < cutoff,
    )
    # A text written for a run that is already closed (a fallback or handoff text for a spent
    # budget, the fallback of a failed run) and not yet sent: no open run points at it.
    unsent = exists().where(
        Message.conversation_id == Conversation.id,
        Message.role == Role.ASSISTANT,
        Message.status == OutboxStatus.PENDING,
        Message.created_at < cutoff,
        ReplyRun.id == Message.reply_run_id,
        ReplyRun.status != RunStatus.RUNNING,
        # Paced (zapreply.replies.pacing): not before its time.
        or_(ReplyRun.next_attempt_at.is_(None), ReplyRun.next_attempt_at < cutoff),
    )
    return list(session.scalars(
        select(Conversation.id)
        .where(
            or_(Conversation.lease_expires_at.is_(None), Conversation.lease_expires_at < now),
            or_(open_run, unanswered, unsent),
        )
        .order_by(Conversation.id)
        .limit(limit)
    ))


def sweep_once(enqueue: Callable[[int], object]) -> list[int]:
    settings = get_settings()
    with session_scope() as session:
        ids = stranded_conversations(session, utcnow(), settings.sweep_grace_seconds)
    for conversation_id in ids:
        enqueue(conversation_id)
    if ids:
        log.info("sweeper: re-enqueued %d conversation(s): %s", len(ids), ids[:20])
    return ids


def start(enqueue: Callable[[int], object]) -> threading.Thread:
    def loop() -> None:
        interval = get_settings().sweep_interval_seconds
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                sweep_once(enqueue)
            except Exception:  # noqa: BLE001 - database or broker down: try next time
                log.warning("sweep failed", exc_info=True)

    # In the caller's context: the runtime it has bound (worker.app) is the loop's.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,),
                              name="sweeper", daemon=True)
    thread.start()
    return thread
