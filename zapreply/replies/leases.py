"""The responder lease: at most one worker answers a conversation at a time.

Claimed with a conditional UPDATE (works the same on PostgreSQL and SQLite, no advisory locks),
so a holder that dies simply lets the lease expire. Each claim bumps `lease_token`; every write a
holder makes afterwards is fenced on that token, so a holder that stalled past its lease and was
replaced finds out before it writes or sends anything.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, bindparam, or_, tuple_, update
from sqlalchemy.orm import Session

from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, utcnow

log = logging.getLogger(__name__)

_conversations = Conversation.__table__


class LeaseLost(Exception):
    """Another worker holds the conversation now; stop without writing."""


# Built once: a statement built per call costs more CPU than running it (SQLAlchemy
# coerces every clause and computes its cache key again), and these run several times for each
# message. Core, on the session's connection: no ORM unit of work for a lease.
_CLAIM = (
    update(_conversations)
    .where(
        _conversations.c.id == bindparam("conversation_id"),
        or_(_conversations.c.lease_expires_at.is_(None),
            _conversations.c.lease_expires_at < bindparam("now")),
    )
    .values(
        lease_token=_conversations.c.lease_token + 1,
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("expires_at"),
    )
    .returning(*_conversations.c)
)
_RENEW = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("conversation_id"),
           _conversations.c.lease_token == bindparam("token"))
    .values(lease_expires_at=bindparam("expires_at"))
)
_RELEASE = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("conversation_id"),
           _conversations.c.lease_token == bindparam("token"))
    .values(lease_expires_at=None, lease_owner=None)
)


def claim_conversation(
    session: Session, conversation_id: int, owner: str, seconds: float
) -> int | None:
    """Take the lease if it is free or expired; return the fencing token, or None."""
    claimed = claim_and_load(session, conversation_id, owner, seconds)
    return claimed.lease_token if claimed is not None else None


def claim_and_load(
    session: Session, conversation_id: int, owner: str, seconds: float
) -> Row[Any] | None:
    """Take the lease if it is free or expired; return the conversation's row as it is now
    (its `lease_token` is the fencing token), or None: one statement where a claim and a load
    would be two. A row, not an ORM object: read it, and load the entity to change it."""
    now = utcnow()
    return session.connection().execute(_CLAIM, {
        "conversation_id": conversation_id, "now": now, "owner": owner[:200],
        "expires_at": now + timedelta(seconds=seconds),
    }).first()


def renew(session: Session, conversation_id: int, token: int, seconds: float) -> bool:
    """Extend the lease if it is still ours; say whether it is."""
    result = session.connection().execute(_RENEW, {
        "conversation_id": conversation_id, "token": token,
        "expires_at": utcnow() + timedelta(seconds=seconds),
    })
    return result.rowcount == 1


def fence(session: Session, conversation_id: int, token: int, seconds: float) -> None:
    """Renew the lease, or raise LeaseLost if it is no longer ours."""
    if not renew(session, conversation_id, token, seconds):
        raise LeaseLost(f"conversation {conversation_id}: lease token {token} superseded")


def release_conversation(session: Session, conversation_id: int, token: int) -> bool:
    """Give the lease up; say whether it was still ours."""
    result = session.connection().execute(
        _RELEASE, {"conversation_id": conversation_id, "token": token})
    return result.rowcount == 1


class LeaseKeeper:
    """Renews, from a background thread, the leases this process holds.

    The lease can then be short (a dead worker's conversations are free again within
    LEASE_SECONDS) however long an LLM call takes. Correctness does not depend on it: if
    renewals stall and another worker takes over, fencing stops this one from writing.
    """

    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, conversation_id: int, token: int) -> None:
        with self._lock:
            self._held[conversation_id] = token
            if self._thread is None or not self._thread.is_alive():
                # In the holder's context: renewals go to the database of the runtime it has
                # bound (the worker's).
                self._thread = threading.Thread(target=contextvars.copy_context().run,
                                                args=(self._run,), name="lease-keeper",
                                                daemon=True)
                self._thread.start()

    def drop(self, conversation_id: int, token: int) -> None:
        with self._lock:
            if self._held.get(conversation_id) == token:
                del self._held[conversation_id]

    def renew_all(self) -> int:
        with self._lock:
            pairs = list(self._held.items())
        if not pairs:
            return 0
        seconds = get_settings().lease_seconds
        with session_scope() as session:
            result = session.execute(
                update(Conversation)
                .where(tuple_(Conversation.id, Conversation.lease_token).in_(pairs))
                .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
            )
        return result.rowcount

    def _run(self) -> None:
        while True:
            time.sleep(get_settings().lease_seconds / 3)
            try:
                self.renew_all()
            except Exception:  # noqa: BLE001 - keep renewing; fencing covers a missed beat
                log.warning("lease renewal failed", exc_info=True)


keeper = LeaseKeeper()
