"""The console's inbox: conversations, newest activity first, filtered by instance or config,
by state, and searched by name, phone or text; keyset-paged on (updated_at, id), which the
indexes ix_conversations_updated_at and ix_conversations_instance_updated_at serve.

A conversation's `updated_at` moves whenever something happens in it: a message recorded, a
reply sent, a pause or resume, a message written from the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select
from sqlalchemy.orm import Session, aliased

from zapreply.actions.errors import Invalid
from zapreply.rules import conversations
from zapreply.storage.models import Conversation, Message, ReplyRun, RunStatus, WorkflowConfig

PAGE_SIZE = 50
HANDOFF_REASON = "handoff to human"
MAX_SEARCH = 100


class State(StrEnum):
    """What an operator filters the inbox by."""

    BOT = "bot"  # the bot answers
    PAUSED = "paused"  # paused by a person (for a while or until given back)
    HANDOFF = "handoff"  # waiting for a person after the model handed it over
    FAILED = "failed"  # its last reply run failed


STATE_LABELS = {
    State.BOT: "Bot answering",
    State.PAUSED: "Paused by a person",
    State.HANDOFF: "Waiting for a human",
    State.FAILED: "Last run failed",
}


@dataclass(frozen=True)
class Row:
    conversation: Conversation
    state: State
    last_message: Message | None
    failed: bool


@dataclass(frozen=True)
class InboxPage:
    rows: list[Row]
    # Pass as `before` for the next (older) page; None when this is the last one.
    next_cursor: str | None


def _last_run_failed() -> ColumnElement[bool]:
    later = aliased(ReplyRun)
    return exists().where(
        ReplyRun.conversation_id == Conversation.id, ReplyRun.status == RunStatus.FAILED,
        ~exists().where(later.conversation_id == Conversation.id, later.id > ReplyRun.id))


def _state_clause(state: State, now: datetime) -> ColumnElement[bool]:
    paused = conversations.paused_clause(now)
    handoff = Conversation.pause_reason == HANDOFF_REASON
    if state == State.BOT:
        return not_(paused)
    if state == State.PAUSED:
        return and_(paused, or_(Conversation.pause_reason.is_(None), not_(handoff)))
    if state == State.HANDOFF:
        return and_(paused, handoff)
    return _last_run_failed()


def parse_state(raw: str | None) -> State | None:
    if not raw:
        return None
    try:
        return State(raw)
    except ValueError:
        raise Invalid(f"'state' must be one of {', '.join(State)}") from None


def parse_cursor(raw: str | None) -> tuple[datetime, int] | None:
    """`<updated_at ISO>_<id>`, as `next_cursor` gives it."""
    if not raw:
        return None
    try:
        stamp, _, ident = raw.rpartition("_")
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError
        return moment, int(ident)
    except ValueError:
        raise Invalid("'before' is not a cursor this page gave") from None


def list_inbox(session: Session, *, now: datetime, instance: str | None = None,
               config_id: int | None = None, state: State | None = None,
               search: str | None = None, before: tuple[datetime, int] | None = None,
               limit: int = PAGE_SIZE) -> InboxPage:
    statement = select(Conversation)
    if instance:
        statement = statement.where(Conversation.instance == instance)
    if config_id is not None:
        statement = statement.where(Conversation.workflow_config_id == config_id)
    if state is not None:
        statement = statement.where(_state_clause(state, now))
    if search:
        if len(search) > MAX_SEARCH:
            raise Invalid(f"a search is at most {MAX_SEARCH} characters")
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%") \
            .replace("_", "\\_") + "%"
        digits = "".join(ch for ch in search if ch.isdigit())
        matches = [func.lower(Conversation.contact_name).like(pattern, escape="\\"),
                   exists().where(Message.conversation_id == Conversation.id,
                                  func.lower(Message.content).like(pattern, escape="\\"))]
        if digits:
            matches.append(Conversation.contact_phone.like(f"%{digits}%"))
            matches.append(Conversation.chat_jid.like(f"%{digits}%"))
        statement = statement.where(or_(*matches))
    if before is not None:
        moment, ident = before
        statement = statement.where(or_(
            Conversation.updated_at < moment,
            and_(Conversation.updated_at == moment, Conversation.id < ident)))
    statement = statement.order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    found = list(session.scalars(statement.limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    rows = _rows(session, found, now)
    cursor = None
    if more and found:
        last = found[-1]
        cursor = f"{last.updated_at.isoformat()}_{last.id}"
    return InboxPage(rows, cursor)


def _rows(session: Session, found: list[Conversation], now: datetime) -> list[Row]:
    ids = [c.id for c in found]
    if not ids:
        return []
    newest = select(func.max(Message.id)).where(Message.conversation_id.in_(ids)) \
        .group_by(Message.conversation_id)
    last = {m.conversation_id: m for m in session.scalars(
        select(Message).where(Message.id.in_(newest)))}
    latest_run = select(func.max(ReplyRun.id)).where(ReplyRun.conversation_id.in_(ids)) \
        .group_by(ReplyRun.conversation_id)
    failed = set(session.scalars(select(ReplyRun.conversation_id).where(
        ReplyRun.id.in_(latest_run), ReplyRun.status == RunStatus.FAILED)))
    return [Row(c, state_of(c, now), last.get(c.id), c.id in failed) for c in found]


def state_of(conversation: Conversation, now: datetime) -> State:
    if not conversations.is_paused(conversation, now):
        return State.BOT
    if conversation.pause_reason == HANDOFF_REASON:
        return State.HANDOFF
    return State.PAUSED


def instances(session: Session) -> list[str]:
    """Every instance a config names, for the filter."""
    return sorted(set(session.scalars(select(WorkflowConfig.instance))))

