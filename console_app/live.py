"""Live updates for open pages, by server-sent events, without a thread held per page.

One `ChangeFeed` per console process polls the `events` table by id (its primary key) about
once a second while anyone is watching, and keeps what it saw in memory. `GET /live` answers
at once with the changes after the browser's Last-Event-ID (or `after`, on the first request)
and a `retry:` interval, then ends; EventSource asks again after that interval, carrying the
last id it got. So an open page costs one short request every couple of seconds, served from
memory, and no worker thread between them; the database sees one query per process per
second however many pages are open. It works the same on SQLite and PostgreSQL, without
Redis.

PostgreSQL hands out ids before commit, so an event can become visible after one with a
higher id. The feed asks again for the ids it skipped for a while, and hands an event that
came late to every browser that asks within `LATE_SECONDS`, whatever id it last saw: a page
may reload a list once too often, never miss a change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from zapreply.storage.db import session_scope
from zapreply.storage.models import Event

bp = Blueprint("live", __name__)
log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RETRY_MS = 1500
# Stop polling when no page asked for this long.
IDLE_SECONDS = 30.0
KEEP = 5000
LATE_SECONDS = 10.0
# Skipped ids asked for again this long (a transaction open longer is not waited for).
GAP_SECONDS = 30.0
MAX_GAPS = 2000


@dataclass(frozen=True)
class Change:
    id: int
    conversation_id: int | None
    arrived: float
    late: bool


class ChangeFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # One poll at a time (the feed's thread, or a request catching up).
        self._polling = threading.Lock()
        self._changes: deque[Change] = deque(maxlen=KEEP)
        self._head: int | None = None
        self._start = 0
        # The ids below the head that were not seen yet, and until when to ask for them.
        self._gaps: dict[int, float] = {}
        self._last_wanted = 0.0
        self._thread: threading.Thread | None = None

    def since(self, after: int | None) -> tuple[int, list[int | None] | None]:
        """The current head and the conversations changed after `after` (None in the list:
        a change outside any conversation); None instead of a list: too far behind to say,
        reload everything."""
        self._wanted()
        if after is not None and after > (self._head or 0):
            # Another console process has read further: catch up before answering.
            self.poll()
        with self._lock:
            head = self._head
            if head is None:
                return (after or 0), []
            if after is None:
                return head, []
            oldest = self._changes[0].id if self._changes else head
            if after < self._start or after > head or (
                    len(self._changes) == KEEP and after < oldest):
                # Too far behind to say what changed, or ahead of a table whose ids went
                # back (a database restored or emptied): the page reloads its list.
                return head, None
            now = time.monotonic()
            changed = [c.conversation_id for c in self._changes
                       if c.id > after or (c.late and now - c.arrived < LATE_SECONDS)]
        return head, sorted(set(changed), key=lambda x: (x is None, x))

    def _wanted(self) -> None:
        self._last_wanted = time.monotonic()
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._head is None:
                    with session_scope() as session:
                        self._head = self._start = head(session)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="console-live",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            if time.monotonic() - self._last_wanted > IDLE_SECONDS:
                continue
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the feed
                log.warning("console live feed: poll failed", exc_info=True)

    def poll(self) -> None:
        with self._polling:
            self._poll()

    def _poll(self) -> None:
        now = time.monotonic()
        with self._lock:
            head_before = self._head or 0
            self._gaps = {i: until for i, until in self._gaps.items() if until > now}
            gaps = list(self._gaps)
        clause = Event.id > head_before
        if gaps:
            clause = or_(clause, Event.id.in_(gaps))
        with session_scope() as session:
            newest = head(session)
            rows = session.execute(select(Event.id, Event.conversation_id).where(clause)
                                   .order_by(Event.id).limit(KEEP)).all()
        with self._lock:
            if newest < head_before:
                # The ids went back (a database restored or emptied): start again from here.
                self._changes.clear()
                self._gaps.clear()
                self._head = self._start = newest
                return
            head_now = self._head or 0
            for event_id, conversation_id in rows:
                late = event_id <= head_before
                if late:
                    self._gaps.pop(event_id, None)
                else:
                    for missing in range(max(head_now + 1, event_id - MAX_GAPS), event_id):
                        if len(self._gaps) < MAX_GAPS:
                            self._gaps[missing] = now + GAP_SECONDS
                    head_now = event_id
                self._changes.append(Change(event_id, conversation_id, now, late))
            self._head = head_now


def head(session: Session) -> int:
    return session.scalar(select(func.max(Event.id))) or 0


# A page starts listening a little before the newest event it could have seen: an event whose
# transaction was still open while the page was read (its id below the newest) then still
# reaches it. It costs the page one reload of its list right after it opens.
IN_FLIGHT_MARGIN = 20


def page_cursor(session: Session) -> int:
    """Where a page's live updates start; read it before the page's data."""
    return max(head(session) - IN_FLIGHT_MARGIN, 0)


def init_app(app: Flask) -> None:
    app.extensions["zapreply.console.feed"] = ChangeFeed()


@bp.get("/live")
def stream() -> Response:
    feed: ChangeFeed = current_app.extensions["zapreply.console.feed"]
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or ""
    after = int(raw) if raw.isdigit() and len(raw) < 19 else None
    head_id, changed = feed.since(after)
    data = {"reload": True} if changed is None else {"conversations": changed}
    body = f"retry: {RETRY_MS}\nid: {head_id}\nevent: change\ndata: {json.dumps(data)}\n\n"
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
