"""One keyset paging for conversations, messages and events: newest first with before_id,
oldest first with after_id, ids as the cursors."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from zapreply.actions.errors import Invalid
from zapreply.actions.paging import page
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event


@pytest.fixture
def event_ids(db) -> list[int]:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        events = [Event(type="test.event", payload={"n": n}) for n in range(5)]
        session.add_all(events)
        session.flush()
        return [event.id for event in events]


def ids(found) -> list[int]:  # type: ignore[no-untyped-def]
    return [row.id for row in found.rows]


def test_newest_first_pages_back_with_before_id(event_ids) -> None:
    with session_scope() as session:
        first = page(session, select(Event), Event.id, limit=2)
        second = page(session, select(Event), Event.id, limit=2, before_id=first.next_id)
        last = page(session, select(Event), Event.id, limit=2, before_id=second.next_id)

    assert [ids(first), ids(second), ids(last)] == [
        event_ids[:-3:-1], event_ids[2:0:-1], event_ids[:1]]
    assert first.cursor() == {"has_more": True, "next_before_id": event_ids[3]}
    assert last.cursor() == {"has_more": False, "next_before_id": None}


def test_oldest_first_after_an_id_keeps_its_cursor_when_nothing_came(event_ids) -> None:
    with session_scope() as session:
        forward = page(session, select(Event), Event.id, limit=3, after_id=event_ids[0])
        caught_up = page(session, select(Event), Event.id, limit=3, after_id=event_ids[-1])

    assert ids(forward) == event_ids[1:4]
    assert forward.cursor() == {"has_more": True, "next_after_id": event_ids[3]}
    assert caught_up.cursor() == {"has_more": False, "next_after_id": event_ids[-1]}


def test_both_cursors_read_forward_between_them(event_ids) -> None:
    with session_scope() as session:
        between = page(session, select(Event), Event.id, limit=10, after_id=event_ids[0],
                       before_id=event_ids[3])

    assert ids(between) == event_ids[1:3]
    assert between.has_more is False


@pytest.mark.parametrize("limit", [0, 201])
def test_a_limit_out_of_range_is_invalid(db, limit) -> None:
    with session_scope() as session, pytest.raises(Invalid, match="'limit'"):
        page(session, select(Event), Event.id, limit=limit)
