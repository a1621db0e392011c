"""The console's inbox: conversations, newest activity first, filtered by instance or config,
by state, and searched by name, phone or text; keyset-paged on (updated_at, id).

Each filter walks an index in that order (ix_conversations_updated_at, its instance's, its
config's, ix_conversations_paused), so a page reads about as many rows as it shows whatever
the depth. A search is two such walks, one over the contacts and one over the message text,
each stopped at a page and the two merged: on PostgreSQL each may start instead from the
trigram indexes (ix_conversations_search, ix_messages_search) when few rows match. The
figures are in docs/PERFORMANCE.md (`python -m bench.inbox`).

A conversation's `updated_at` moves whenever something happens in it: a message recorded, a
reply sent, a pause or resume, a message written from the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, not_, or_, select, union
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
    # The few failed runs that no later run followed, rather than each conversation's latest
    # run: PostgreSQL then hashes that set once and walks the conversations by activity.
    later = aliased(ReplyRun)
    return Conversation.id.in_(select(ReplyRun.conversation_id).where(
        ReplyRun.status == RunStatus.FAILED,
        ~exists().where(later.conversation_id == ReplyRun.conversation_id,
                        later.id > ReplyRun.id)))


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
    filters: list[ColumnElement[bool]] = []
    if instance:
        filters.append(Conversation.instance == instance)
    if config_id is not None:
        filters.append(Conversation.workflow_config_id == config_id)
    if state is not None:
        filters.append(_state_clause(state, now))
    if before is not None:
        moment, ident = before
        # The first condition alone is an index range; the second breaks ties on the id.
        filters.append(Conversation.updated_at <= moment)
        filters.append(or_(Conversation.updated_at < moment, Conversation.id < ident))
    if search:
        if len(search) > MAX_SEARCH:
            raise Invalid(f"a search is at most {MAX_SEARCH} characters")
        statement = select(Conversation).where(
            Conversation.id.in_(_matching(search, filters, limit + 1)))
    else:
        statement = select(Conversation).where(*filters)
    found = list(session.scalars(_newest_first(statement).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    rows = _rows(session, found, now)
    cursor = None
    if more and found:
        last = found[-1]
        cursor = f"{last.updated_at.isoformat()}_{last.id}"
    return InboxPage(rows, cursor)


def _newest_first(statement: Select[Any]) -> Select[Any]:
    return statement.order_by(Conversation.updated_at.desc(), Conversation.id.desc())


def _matching(search: str, filters: list[ColumnElement[bool]], limit: int) -> Select[Any]:
    """The ids of the first `limit` conversations whose contact matches and of the first whose
    messages do: the page is among them. Case-insensitive substrings (ILIKE on PostgreSQL,
    lower() LIKE lower() on SQLite); digits also match anywhere in the number or the JID."""
    # Lowered here too, as SQLite's lower() knows only ASCII letters.
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    contact = [Conversation.contact_name.ilike(pattern, escape="\\")]
    digits = "".join(ch for ch in search if ch.isdigit())
    if digits:
        contact.append(Conversation.contact_phone.like(f"%{digits}%"))
        contact.append(Conversation.chat_jid.like(f"%{digits}%"))
    text = Conversation.id.in_(select(Message.conversation_id).where(
        Message.content.ilike(pattern, escape="\\")))
    by_contact = _newest_first(select(Conversation.id).where(*filters, or_(*contact))) \
        .limit(limit).subquery()
    by_text = _newest_first(select(Conversation.id).where(*filters, text)).limit(limit).subquery()
    return union(select(by_contact.c.id), select(by_text.c.id))


def _rows(session: Session, found: list[Conversation], now: datetime) -> list[Row]:
    ids = [c.id for c in found]
    if not ids:
        return []
    # Each conversation's newest message and latest run, one index probe each (a long
    # conversation's thousands of messages are not read to find its last).
    newest = select(Message.id).where(Message.conversation_id == Conversation.id) \
        .order_by(Message.id.desc()).limit(1).correlate(Conversation).scalar_subquery()
    last = {m.conversation_id: m for m in session.scalars(select(Message).where(
        Message.id.in_(select(newest).where(Conversation.id.in_(ids)))))}
    latest_run = select(ReplyRun.status).where(ReplyRun.conversation_id == Conversation.id) \
        .order_by(ReplyRun.id.desc()).limit(1).correlate(Conversation).scalar_subquery()
    failed = set(session.scalars(select(Conversation.id).where(
        Conversation.id.in_(ids), latest_run == RunStatus.FAILED)))
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

