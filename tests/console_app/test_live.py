"""Live updates: one feed per console process over the events table, answered from memory."""

from __future__ import annotations

import json

from sqlalchemy import text

from tests.console_app.conftest import make_conversation
from zapreply.storage import events
from zapreply.storage.db import get_engine, session_scope
from zapreply.storage.events import EventType


def _read(response) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    fields = dict(line.split(": ", 1) for line in response.get_data(as_text=True).splitlines()
                  if ": " in line)
    return int(fields["id"]), json.loads(fields["data"])


def _insert_event(event_id: int, conversation_id: int) -> None:
    with get_engine().begin() as connection:
        connection.execute(text(
            "INSERT INTO events (id, type, conversation_id, payload, created_at) "
            "VALUES (:id, 'message.received', :conversation_id, '{}', now())"),
            {"id": event_id, "conversation_id": conversation_id})


def test_the_stream_answers_at_once_with_a_retry_and_the_current_head(admin):
    response = admin.get("/live")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.get_data(as_text=True).startswith("retry: ")
    head, data = _read(response)
    assert data == {"conversations": []}


def test_a_new_event_reaches_a_page_that_asks_with_its_last_event_id(admin, console):
    conversation_id = make_conversation()
    head, _ = _read(admin.get("/live"))
    with session_scope() as session:
        events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation_id)
    console.extensions["zapreply.console.feed"].poll()
    newer, data = _read(admin.get("/live", headers={"Last-Event-ID": str(head)}))
    assert newer > head and data == {"conversations": [conversation_id]}
    # Asked again from the new id: nothing more.
    assert _read(admin.get("/live", headers={"Last-Event-ID": str(newer)}))[1] == {
        "conversations": []}


def test_an_event_committed_after_a_higher_id_still_reaches_the_page(admin, console):
    early, late = make_conversation(phone="5511900000001"), make_conversation(phone="5511900000002")
    feed = console.extensions["zapreply.console.feed"]
    head, _ = _read(admin.get("/live"))
    # PostgreSQL gave id head+1 to a transaction that commits after the one with head+2.
    _insert_event(head + 2, early)
    feed.poll()
    seen, data = _read(admin.get("/live", headers={"Last-Event-ID": str(head)}))
    assert seen == head + 2 and data == {"conversations": [early]}
    _insert_event(head + 1, late)
    feed.poll()
    assert _read(admin.get("/live", headers={"Last-Event-ID": str(seen)}))[1] == {
        "conversations": [late]}


def test_a_page_further_behind_than_the_feed_knows_is_told_to_reload(admin, console):
    head, _ = _read(admin.get("/live"))
    _, data = _read(admin.get("/live", headers={"Last-Event-ID": "0"}))
    assert data == ({"reload": True} if head > 0 else {"conversations": []})


def test_the_stream_needs_a_signed_in_operator(console):
    assert console.test_client().get("/live").status_code == 401


def test_a_table_whose_ids_went_back_makes_pages_reload_and_is_followed_from_there(admin,
                                                                                   console):
    conversation_id = make_conversation()
    for _ in range(3):
        with session_scope() as session:
            events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation_id)
    feed = console.extensions["zapreply.console.feed"]
    ahead, _ = _read(admin.get("/live"))
    with get_engine().begin() as connection:
        connection.execute(text("TRUNCATE events RESTART IDENTITY"))
    with session_scope() as session:
        events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation_id)
    feed.poll()
    restarted, data = _read(admin.get("/live", headers={"Last-Event-ID": str(ahead)}))
    assert data == {"reload": True} and restarted == 1
    with session_scope() as session:
        events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation_id)
    feed.poll()
    assert _read(admin.get("/live", headers={"Last-Event-ID": "1"})) == (
        2, {"conversations": [conversation_id]})
