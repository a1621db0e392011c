"""The SQL of contacts: which LID and phone JID are one person on an instance
(`contact_addresses`), and which conversation a message of either belongs to.

The pair is written in the intake's transaction with INSERT … ON CONFLICT DO NOTHING on both
unique constraints (instance and LID, instance and phone JID), the same statement on SQLite and
PostgreSQL: two workers recording it at once write it once, and a form already paired with
another address keeps its first pair.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zapreply.storage.models import ContactAddress, Conversation, utcnow

_addresses = ContactAddress.__table__
_conversations = Conversation.__table__

_built: dict[str, Any] = {}

LID_SUFFIX = "@lid"
PHONE_SUFFIX = "@s.whatsapp.net"


def _pair_insert(dialect: str) -> Any:
    if dialect not in _built:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        _built[dialect] = insert(_addresses).values(
            instance=bindparam("instance"), lid_jid=bindparam("lid"),
            phone_jid=bindparam("phone"), created_at=bindparam("now"),
        ).on_conflict_do_nothing()
    return _built[dialect]


_OTHER_FORM = select(_addresses.c.lid_jid, _addresses.c.phone_jid).where(
    _addresses.c.instance == bindparam("instance"),
    or_(_addresses.c.lid_jid == bindparam("jid"), _addresses.c.phone_jid == bindparam("jid")),
).limit(1)
_CONVERSATIONS_OF = select(_conversations.c.id, _conversations.c.chat_jid).where(
    _conversations.c.instance == bindparam("instance"),
    _conversations.c.chat_jid.in_(bindparam("chats", expanding=True)),
).order_by(_conversations.c.id)


def split(first: str, second: str) -> tuple[str, str] | None:
    """(LID, phone JID) of two addresses of one person, in either order; None unless one of
    each."""
    if first.endswith(LID_SUFFIX) and second.endswith(PHONE_SUFFIX):
        return first, second
    if first.endswith(PHONE_SUFFIX) and second.endswith(LID_SUFFIX):
        return second, first
    return None


def record_pair(session: Session, instance: str, lid: str, phone: str) -> None:
    session.connection().execute(
        _pair_insert(session.get_bind().dialect.name),
        {"instance": instance, "lid": lid, "phone": phone, "now": utcnow()})


def other_form(session: Session, instance: str, jid: str) -> str | None:
    """The person's other address on the instance, if a message ever carried both."""
    row = session.connection().execute(
        _OTHER_FORM, {"instance": instance, "jid": jid}).first()
    if row is None:
        return None
    return row.phone_jid if row.lid_jid == jid else row.lid_jid


def chat_for(session: Session, instance: str, chat_jid: str, alt_jid: str | None) -> str:
    """The chat a one-to-one message is recorded under: the person's conversation under
    either address if there is one (the oldest, which a merge keeps: zapreply.actions.contacts);
    else, when both addresses are known, the phone's JID, so that messages of a new contact
    recorded at once under either address open one conversation (the unique chat); else the
    chat as it came. `alt_jid`: the other address the message carried, recorded."""
    if not chat_jid.endswith((LID_SUFFIX, PHONE_SUFFIX)):
        return chat_jid  # a group, a broadcast: no person's address
    if alt_jid is not None:
        pair = split(chat_jid, alt_jid)
        if pair is not None:
            record_pair(session, instance, *pair)
    else:
        alt_jid = other_form(session, instance, chat_jid)
    pair = split(chat_jid, alt_jid) if alt_jid is not None else None
    if pair is None:
        return chat_jid
    found = session.connection().execute(
        _CONVERSATIONS_OF, {"instance": instance, "chats": list(pair)}).first()
    return found.chat_jid if found is not None else pair[1]


def addresses(session: Session, instance: str | None,
              jids: tuple[str, ...]) -> list[ContactAddress]:
    """The pairs naming any of `jids` (on `instance`, or on any)."""
    query = select(ContactAddress).where(
        or_(ContactAddress.lid_jid.in_(jids), ContactAddress.phone_jid.in_(jids)))
    if instance is not None:
        query = query.where(ContactAddress.instance == instance)
    return list(session.scalars(query.order_by(ContactAddress.id)))


def split_pairs(session: Session, instance: str | None = None) -> list[ContactAddress]:
    """The pairs whose two addresses each have a conversation on the instance."""
    lid_chat = _conversations.alias("lid_chat")
    phone_chat = _conversations.alias("phone_chat")
    query = (
        select(ContactAddress)
        .join(lid_chat, (lid_chat.c.instance == ContactAddress.instance)
              & (lid_chat.c.chat_jid == ContactAddress.lid_jid))
        .join(phone_chat, (phone_chat.c.instance == ContactAddress.instance)
              & (phone_chat.c.chat_jid == ContactAddress.phone_jid))
    )
    if instance is not None:
        query = query.where(ContactAddress.instance == instance)
    return list(session.scalars(query.order_by(ContactAddress.id)))


def take_leases(session: Session, conversation_ids: list[int], owner: str,
                seconds: float) -> bool:
    """Take the responder leases of all these conversations, in the caller's transaction, or
    none (False: one is held). Each token moves on, as a worker's claim moves it
    (zapreply.replies.leases): whoever held one before writes nothing more."""
    now = utcnow()
    taken = session.connection().execute(
        update(_conversations)
        .where(_conversations.c.id.in_(conversation_ids),
               or_(_conversations.c.lease_expires_at.is_(None),
                   _conversations.c.lease_expires_at < now))
        .values(lease_token=_conversations.c.lease_token + 1, lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=seconds)))
    return taken.rowcount == len(conversation_ids)
