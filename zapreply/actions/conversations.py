"""Conversations as an operator sees them: list and read them with their messages, pause the
bot for one (for a while or until resumed) and resume it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import not_, select
from sqlalchemy.orm import Session

from zapreply.actions.errors import Invalid, NotFound
from zapreply.actions.paging import DEFAULT_LIMIT, Page, page
from zapreply.rules import conversations
from zapreply.storage.models import Conversation, ConversationStatus, Message, utcnow

MAX_PAUSE_MINUTES = 366 * 24 * 60
STATUSES = (ConversationStatus.ACTIVE, ConversationStatus.PAUSED)


def get_conversation(
    session: Session, conversation_id: int, *, for_update: bool = False
) -> Conversation:
    # The row lock orders an operator's pause or resume with the worker's own (a business
    # message pausing the same conversation), so neither overwrites the other half-way.
    conversation = session.get(Conversation, conversation_id, with_for_update=for_update)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    return conversation


def list_conversations(
    session: Session,
    *,
    now: datetime,
    instance: str | None = None,
    status: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before_id: int | None = None,
) -> Page:
    """Newest first; `status` is whether the bot is paused at `now`, not the stored column."""
    statement = select(Conversation)
    if instance is not None:
        statement = statement.where(Conversation.instance == instance)
    if status == ConversationStatus.PAUSED:
        statement = statement.where(conversations.paused_clause(now))
    elif status == ConversationStatus.ACTIVE:
        statement = statement.where(not_(conversations.paused_clause(now)))
    elif status is not None:
        raise Invalid("'status' must be active or paused")
    return page(session, statement, Conversation.id, limit=limit, before_id=before_id)


def list_messages(
    session: Session,
    conversation_id: int,
    *,
    limit: int = DEFAULT_LIMIT,
    before_id: int | None = None,
    after_id: int | None = None,
) -> Page:
    """Always chronological: by default the latest `limit` messages, with `before_id` the
    ones before it, with `after_id` the first ones after it."""
    conversation = get_conversation(session, conversation_id)
    statement = select(Message).where(Message.conversation_id == conversation.id)
    found = page(session, statement, Message.id, limit=limit, before_id=before_id,
                 after_id=after_id)
    if found.forward:
        return found
    return Page(list(reversed(found.rows)), found.has_more, forward=False,
                next_id=found.next_id)


def pause(
    session: Session,
    conversation_id: int,
    *,
    reason: Any,
    minutes: Any = None,
    actor: str,
    now: datetime | None = None,
) -> Conversation:
    """Stop the bot answering: for `minutes`, or until resumed when None. `reason` is shown
    to operators and kept in the event."""
    reason = _pause_reason(reason)
    minutes = _pause_minutes(minutes)
    conversation = get_conversation(session, conversation_id, for_update=True)
    now = now or utcnow()
    until = now + timedelta(minutes=minutes) if minutes is not None else None
    conversations.pause(session, conversation, reason=reason, until=until, actor=actor)
    session.flush()
    return conversation


def resume(
    session: Session, conversation_id: int, *, actor: str, now: datetime | None = None
) -> Conversation:
    conversation = get_conversation(session, conversation_id, for_update=True)
    conversations.resume(session, conversation, actor=actor, now=now or utcnow())
    session.flush()
    return conversation


def _pause_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise Invalid("'reason' must be a non-empty string")
    length = Conversation.__table__.c.pause_reason.type.length
    if len(reason.strip()) > length:
        raise Invalid(f"'reason' must be at most {length} characters")
    return reason.strip()


def _pause_minutes(minutes: Any) -> float | None:
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) \
            or not 0 < minutes <= MAX_PAUSE_MINUTES:
        raise Invalid(f"'minutes' must be a number above 0 and at most {MAX_PAUSE_MINUTES}, "
                      "or null to pause until resumed")
    return float(minutes)
