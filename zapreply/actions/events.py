"""The event log as an operator reads it: filtered by conversation, run or type; newest first,
or oldest first after an id to tail it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.actions.paging import DEFAULT_LIMIT, Page, page
from zapreply.storage.models import Event


def list_events(
    session: Session,
    *,
    conversation_id: int | None = None,
    run_id: int | None = None,
    event_type: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before_id: int | None = None,
    after_id: int | None = None,
) -> Page:
    statement = select(Event)
    if conversation_id is not None:
        statement = statement.where(Event.conversation_id == conversation_id)
    if run_id is not None:
        statement = statement.where(Event.run_id == run_id)
    if event_type is not None:
        statement = statement.where(Event.type == event_type)
    return page(session, statement, Event.id, limit=limit, before_id=before_id,
                after_id=after_id)
