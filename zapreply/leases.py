"""The responder lease: at most one worker answers a conversation at a time.

Claimed with a conditional UPDATE (works the same on PostgreSQL and SQLite, no advisory locks),
so a holder that dies simply lets the lease expire. Each claim bumps `lease_token`; every write a
holder makes afterwards is fenced on that token, so a holder that stalled past its lease and was
replaced finds out before it writes or sends anything.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import or_, tuple_, update
from sqlalchemy.orm import Session

from zapreply.db import session_scope
from zapreply.models import Conversation, utcnow
from zapreply.settings import get_settings

log = logging.getLogger(__name__)

_conversations = Conversation.__table__


class LeaseLost(Exception):
    """Another worker holds the conversation now; stop without writing."""


def claim_conversation(
    session: Session, conversation_id: int, owner: str, seconds: float
) -> int | None:
    """Take the lease if it is free or expired; return the fencing token, or None."""
    now = utcnow()
    # Core statements on the session's connection, here and below: a quarter of the CPU of
    # the same UPDATE through the ORM, and these run several times per message.
    token = session.connection().execute(
        update(_conversations)
        .where(
            _conversations.c.id == conversation_id,
            or_(_conversations.c.lease_expires_at.is_(None),
                _conversations.c.lease_expires_at < now),
        )
        .values(
            lease_token=_conversations.c.lease_token + 1,
            lease_owner=owner[:200],
            lease_expires_at=now + timedelta(seconds=seconds),
        )
        .returning(_conversations.c.lease_token)
    ).scalar()
    return token


def claim_and_load(
    session: Session, conversation_id: int, owner: str, seconds: float
) -> Conversation | None:
    """claim_conversation, returning the conversation itself (its `lease_token` is the
    fencing token): one statement where a claim and a load would be two."""
    now = utcnow()
    return session.scalars(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            or_(Conversation.lease_expires_at.is_(None), Conversation.lease_expires_at < now),
        )
        .values(
            lease_token=Conversation.lease_token + 1,
            lease_owner=owner[:200],
            lease_expires_at=now + timedelta(seconds=seconds),
        )
        .returning(Conversation),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).first()


def renew(session: Session, conversation_id: int, token: int, seconds: float) -> bool:
    """Extend the lease if it is still ours; say whether it is."""
    result = session.connection().execute(
        update(_conversations)
        .where(_conversations.c.id == conversation_id, _conversations.c.lease_token == token)
        .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
    )
    return result.rowcount == 1


def fence(session: Session, conversation_id: int, token: int, seconds: float) -> None:
    """Renew the lease, or raise LeaseLost if it is no longer ours."""
    if not renew(session, conversation_id, token, seconds):
        raise LeaseLost(f"conversation {conversation_id}: lease token {token} superseded")


def release_conversation(session: Session, conversation_id: int, token: int) -> bool:
    """Give the lease up; say whether it was still ours."""
    result = session.connection().execute(
        update(_conversations)
        .where(_conversations.c.id == conversation_id, _conversations.c.lease_token == token)
        .values(lease_expires_at=None, lease_owner=None)
    )
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
                self._thread = threading.Thread(target=self._run, name="lease-keeper",
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
