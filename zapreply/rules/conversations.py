"""Pausing and resuming the bot for one conversation, and how a conversation reads outside.

A pause has a reason and, optionally, an end: a pause whose `paused_until` has passed is over
without anyone writing to the row, so readers ask `is_paused(conversation, now)` instead of
looking at `status`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import Session

from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, ConversationStatus, utcnow

HUMAN_TOOK_OVER = "human took over"


def is_paused(conversation: Conversation, now: datetime) -> bool:
    return conversation.status == ConversationStatus.PAUSED and (
        conversation.paused_until is None or conversation.paused_until > now
    )


def paused_clause(now: datetime) -> ColumnElement[bool]:
    """`is_paused` as SQL, for listing conversations by their status as it is now."""
    return and_(
        Conversation.status == ConversationStatus.PAUSED,
        or_(Conversation.paused_until.is_(None), Conversation.paused_until > now),
    )


def pause(
    session: Session,
    conversation: Conversation,
    *,
    reason: str,
    until: datetime | None = None,
    actor: str,
) -> None:
    """Stop the bot answering this conversation until `until`, or until `resume` if None.

    Pausing a paused conversation replaces its reason and end, and is recorded too: the
    events then show who extended (or shortened) the pause.
    """
    conversation.status = ConversationStatus.PAUSED
    conversation.paused_until = until
    conversation.pause_reason = reason
    if conversation.id is None:
        session.flush()
    events.record(
        session, EventType.CONVERSATION_PAUSED, conversation_id=conversation.id,
        reason=reason, until=_iso(until), actor=actor,
    )


def resume(
    session: Session, conversation: Conversation, *, actor: str, now: datetime | None = None
) -> bool:
    """Let the bot answer again. False, and no event, when it was not paused.

    A pause that already ran out counts as not paused (no one paused it for now); its
    leftover fields are cleared all the same.
    """
    was_paused = is_paused(conversation, now or utcnow())
    ended_reason, ended_until = conversation.pause_reason, conversation.paused_until
    conversation.status = ConversationStatus.ACTIVE
    conversation.paused_until = None
    conversation.pause_reason = None
    if not was_paused:
        return False
    # reason and until describe the pause that ended, so the event reads on its own.
    events.record(
        session, EventType.CONVERSATION_RESUMED, conversation_id=conversation.id,
        reason=ended_reason, until=_iso(ended_until), actor=actor,
    )
    return True


def pause_for_business(
    session: Session,
    conversation: Conversation,
    *,
    minutes: float | None,
    now: datetime,
    actor: str,
) -> bool:
    """A person at the business wrote to the customer: the bot steps aside for `minutes`
    (None: until resumed, 0: not at all). A pause already lasting at least as long (an
    operator's or a handoff's open-ended one) is kept, never shortened. True if it paused."""
    if minutes == 0:
        return False
    until = now + timedelta(minutes=float(minutes)) if minutes is not None else None
    if is_paused(conversation, now) and (
        conversation.paused_until is None
        or (until is not None and conversation.paused_until >= until)
    ):
        return False
    pause(session, conversation, reason=HUMAN_TOOK_OVER, until=until, actor=actor)
    return True


def pause_expired(conversation: Conversation, now: datetime) -> bool:
    """Paused until a time that has passed: over, but not yet recorded as over."""
    return conversation.status == ConversationStatus.PAUSED \
        and conversation.paused_until is not None and conversation.paused_until <= now


def end_expired_pause(session: Session, conversation: Conversation, now: datetime) -> bool:
    """A pause whose end has passed is over already; when the conversation next has work,
    record that (event `conversation.resumed`, actor `expired`, `until` when it ended) and
    clear the fields. False when there was no such pause."""
    if not pause_expired(conversation, now):
        return False
    ended_reason, ended_until = conversation.pause_reason, conversation.paused_until
    conversation.status = ConversationStatus.ACTIVE
    conversation.paused_until = None
    conversation.pause_reason = None
    events.record(
        session, EventType.CONVERSATION_RESUMED, conversation_id=conversation.id,
        reason=ended_reason, until=_iso(ended_until), actor="expired",
    )
    return True


def public_view(conversation: Conversation, now: datetime) -> dict[str, Any]:
    """What the admin API shows: no lease fields, and the status as it is now."""
    paused = is_paused(conversation, now)
    return {
        "id": conversation.id,
        "instance": conversation.instance,
        "chat_jid": conversation.chat_jid,
        "contact_phone": conversation.contact_phone,
        "contact_name": conversation.contact_name,
        "workflow_config_id": conversation.workflow_config_id,
        "status": ConversationStatus.PAUSED if paused else ConversationStatus.ACTIVE,
        "paused_until": _iso(conversation.paused_until) if paused else None,
        "pause_reason": conversation.pause_reason if paused else None,
        "last_inbound_at": _iso(conversation.last_inbound_at),
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None

