"""The responder lease: at most one worker answers a conversation at a time.

Claimed with a conditional UPDATE (works the same on PostgreSQL and SQLite, no advisory locks),
so a holder that dies simply lets the lease expire. Each claim bumps `lease_token`; every write a
holder makes afterwards is fenced on that token, so a holder that stalled past its lease and was
replaced finds out before it writes or sends anything.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from zapreply.models import Conversation, utcnow


class LeaseLost(Exception):
    """Another worker holds the conversation now; stop without writing."""


def claim_conversation(
    session: Session, conversation_id: int, owner: str, seconds: float
) -> int | None:
    """Take the lease if it is free or expired; return the fencing token, or None."""
    now = utcnow()
    token = session.execute(
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
        .returning(Conversation.lease_token)
    ).scalar()
    return token


def fence(session: Session, conversation_id: int, token: int, seconds: float) -> None:
    """Renew the lease, or raise LeaseLost if it is no longer ours."""
    result = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.lease_token == token)
        .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
    )
    if result.rowcount != 1:
        raise LeaseLost(f"conversation {conversation_id}: lease token {token} superseded")


def release_conversation(session: Session, conversation_id: int, token: int) -> None:
    session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.lease_token == token)
        .values(lease_expires_at=None, lease_owner=None)
    )
