"""The SQL of the inbox: inbound messages, each recorded once per (instance, WhatsApp id) with
its conversation (one per instance and chat) and its `message.received` event, and the counts
the intake's rules read.

`record_portable` is the reference: the conversation upserted, the message inserted unless the
unique (instance, wa_message_id) constraint already holds one, its event; statements SQLite and
PostgreSQL both run. `record` takes a PostgreSQL fast path instead: the same three writes in one
statement, which also reads the instance's conversations opened in the last minute, when asked.
It pays:
together with a plain reply stored by one statement it took a message from two commits to one,
worker CPU −12 %, PostgreSQL −13 %, replies/s +9 % (docs/PERFORMANCE.md, History, c53ab44). The
same behaviour tests run on both (tests/zapreply/replies/test_inbound.py).

Statements are built once per dialect: building one per call costs more CPU than running it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Row,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    ConversationStatus,
    Event,
    Message,
    MessageExtra,
    ReplyRun,
    Role,
    RunStatus,
)

# The error of a run that set a message aside because its conversation was one too many for
# the instance's new_conversations_per_minute (zapreply.replies.inbound).
TOO_MANY_NEW_CONVERSATIONS = "too many new conversations"

_conversations = Conversation.__table__
_messages = Message.__table__
_runs = ReplyRun.__table__

_built: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class Contact:
    """What a message tells about its conversation."""

    instance: str
    chat_jid: str
    contact_phone: str | None
    contact_name: str | None
    config_id: int | None
    # When the customer last wrote (None for the business's own messages).
    inbound_at: datetime | None

    def params(self, now: datetime) -> dict[str, Any]:
        return {
            "instance": self.instance, "chat_jid": self.chat_jid,
            "contact_phone": self.contact_phone, "contact_name": self.contact_name,
            "config_id": self.config_id, "inbound_at": self.inbound_at,
            "created_at": now, "updated_at": now,
        }


@dataclass(frozen=True)
class Inbound:
    """A message to record: its `messages` columns."""

    role: Role
    content: str
    wa_message_id: str
    media_type: str | None
    extra: MessageExtra
    created_at: datetime

    def params(self) -> dict[str, Any]:
        return {
            "role": self.role, "content": self.content, "wa_message_id": self.wa_message_id,
            "media_type": self.media_type, "extra": self.extra, "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Stored:
    """What `record` did: the conversation's row as it is now, the new message's id (None: the
    message was already recorded), and whether the message opened the conversation. The fast
    path's count of the instance's new conversations rides along (None where not read): ask
    through `opened_past`."""

    conversation: Row[Any]
    message_id: int | None
    opened_conversation: bool
    at: datetime  # when the message was recorded
    opened_before: int | None = None


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert_for(dialect: str):  # type: ignore[no-untyped-def]
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _upsert_conversation(dialect: str) -> Any:
    key = ("conversation", dialect)
    if key not in _built:
        table = _conversations
        insert = _insert_for(dialect)(table).values(
            instance=bindparam("instance"), chat_jid=bindparam("chat_jid"),
            contact_phone=bindparam("contact_phone"), contact_name=bindparam("contact_name"),
            workflow_config_id=bindparam("config_id"), status=ConversationStatus.ACTIVE,
            lease_token=0,
            last_inbound_at=bindparam("inbound_at"), created_at=bindparam("created_at"),
            updated_at=bindparam("updated_at"),
        )
        _built[key] = insert.on_conflict_do_update(
            index_elements=["instance", "chat_jid"],
            set_={
                "contact_name": func.coalesce(insert.excluded.contact_name,
                                              table.c.contact_name),
                "contact_phone": func.coalesce(table.c.contact_phone,
                                               insert.excluded.contact_phone),
                # The conversation keeps the config that answers it (see
                # zapreply.rules.triggers.choose_config).
                "workflow_config_id": func.coalesce(
                    table.c.workflow_config_id, insert.excluded.workflow_config_id),
                "last_inbound_at": func.coalesce(
                    insert.excluded.last_inbound_at, table.c.last_inbound_at),
                "updated_at": insert.excluded.updated_at,
            },
        ).returning(*table.c)
    return _built[key]


def _insert_message(dialect: str) -> Any:
    key = ("message", dialect)
    if key not in _built:
        columns = ("conversation_id", "instance", "role", "content", "wa_message_id",
                   "media_type", "extra", "created_at")
        _built[key] = (
            _insert_for(dialect)(_messages).values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing(index_elements=["instance", "wa_message_id"])
            .returning(_messages.c.id)
        )
    return _built[key]


def conversation_for(session: Session, contact: Contact, now: datetime) -> Row[Any]:
    """Get or create the conversation in one statement (an upsert), refreshing what the
    latest message tells about the contact. Its row as it is now: to change the conversation,
    load it (`session.get(Conversation, row.id)`). A conversation it created has `created_at`
    `now`."""
    return session.connection().execute(
        _upsert_conversation(_dialect(session)), contact.params(now)).one()


def record(session: Session, contact: Contact, message: Inbound, *,
           count_opened: bool) -> Stored:
    """Record a message with its conversation, once per (instance, WhatsApp id), and its
    `message.received` event. `count_opened`: the instance's new conversations will be asked
    for (`opened_past`)."""
    if _dialect(session) == "postgresql":
        return _record_postgresql(session, contact, message, count_opened=count_opened)
    return record_portable(session, contact, message)


def record_portable(session: Session, contact: Contact, message: Inbound) -> Stored:
    """`record` in statements any database runs: the reference of the fast path."""
    now = message.created_at
    conversation = conversation_for(session, contact, now)
    message_id = session.connection().execute(_insert_message(_dialect(session)), {
        **message.params(), "conversation_id": conversation.id, "instance": contact.instance,
    }).scalar()
    if message_id is not None:
        events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation.id,
                      **_received(message))
    return Stored(conversation, message_id, conversation.created_at == now, now)


def _received(message: Inbound) -> dict[str, Any]:
    """The `message.received` event's payload."""
    return {"wa_message_id": message.wa_message_id, "role": message.role,
            "media_type": message.media_type}


_SINCE = bindparam("since", type_=_messages.c.created_at.type)
_RECENT = select(func.count()).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.CUSTOMER,
    _messages.c.created_at > bindparam("since"),
)
_RECENT_FROM = _RECENT.where(_messages.c.extra["sender"].as_string() == bindparam("sender"))
_NEW_ON_INSTANCE = select(func.count()).where(
    _conversations.c.instance == bindparam("instance"),
    _conversations.c.created_at > bindparam("since"),
)
_LOCK_NEW_CONVERSATIONS = select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger())))
_TURNED_AWAY = select(exists().where(
    _runs.c.conversation_id == bindparam("conversation_id"),
    _runs.c.status == RunStatus.SKIPPED,
    _runs.c.error == TOO_MANY_NEW_CONVERSATIONS,
))


def _record_postgresql_statement() -> Any:
    """The conversation upserted, the message inserted unless it is a duplicate, its event and,
    when asked for, the instance's conversations opened in the last minute before this one, in
    one statement. The conversation's row comes back with `message_id` (None for a duplicate)
    and `opened`.

    Nothing else is read here: the whole statement reads the snapshot it started with, and an
    upsert that waited for a concurrent message of the same chat to commit would count without
    that message (its rate limit, whether its conversation was turned away). The statements
    that ask those run after it, each with a snapshot of its own: with the default rate limit
    that is one more statement a customer message, in the open transaction (0.12–0.16 ms of
    client CPU, docs/PERFORMANCE.md, Worker). `opened` is a lower bound for the same reason,
    which is all `opened_past` takes from it."""
    key = ("conversation and message", "postgresql")
    if key not in _built:
        events_table = Event.__table__
        conversation = _upsert_conversation("postgresql").cte("conversation")
        typed = {name: bindparam(name, type_=_messages.c[name].type)
                 for name in ("role", "content", "wa_message_id", "media_type", "extra")}
        created_at = bindparam("created_at", type_=_messages.c.created_at.type)
        inserted = (
            postgresql.insert(_messages)
            .from_select(
                ["conversation_id", "instance", "role", "content", "wa_message_id",
                 "media_type", "extra", "created_at"],
                select(conversation.c.id, conversation.c.instance, typed["role"],
                       typed["content"], typed["wa_message_id"], typed["media_type"],
                       typed["extra"], created_at),
            )
            .on_conflict_do_nothing(index_elements=["instance", "wa_message_id"])
            .returning(_messages.c.id, _messages.c.conversation_id)
            .cte("inserted")
        )
        event = (
            postgresql.insert(events_table)
            .from_select(
                ["type", "conversation_id", "payload", "created_at"],
                select(bindparam("event_type", type_=events_table.c.type.type),
                       inserted.c.conversation_id,
                       bindparam("payload", type_=events_table.c.payload.type),
                       bindparam("created_at", type_=events_table.c.created_at.type)),
            )
            .cte("event")
        )
        opened = select(func.count()).where(
            _conversations.c.instance == conversation.c.instance,
            _conversations.c.created_at > _SINCE,
        ).scalar_subquery()
        count_opened = bindparam("count_opened", type_=Boolean())
        _built[key] = select(
            *conversation.c,
            select(inserted.c.id).scalar_subquery().label("message_id"),
            case((and_(count_opened, conversation.c.created_at == created_at), opened))
            .label("opened"),
        ).add_cte(event)
    return _built[key]


def _record_postgresql(session: Session, contact: Contact, message: Inbound, *,
                       count_opened: bool) -> Stored:
    now = message.created_at
    row = session.connection().execute(_record_postgresql_statement(), {
        **contact.params(now), **message.params(),
        "event_type": EventType.MESSAGE_RECEIVED, "payload": _received(message),
        "count_opened": count_opened, "since": _minute_before(now),
    }).one()
    return Stored(row, row.message_id, row.created_at == now, now, opened_before=row.opened)


def _minute_before(now: datetime) -> datetime:
    return now - timedelta(minutes=1)


def customer_messages_in_the_last_minute(session: Session, stored: Stored,
                                         sender: str | None = None) -> int:
    """The customer's messages in the conversation in the minute up to the one just stored,
    that one included; with `sender`, only that group member's."""
    params = {"conversation_id": stored.conversation.id, "since": _minute_before(stored.at)}
    if sender:
        return session.connection().execute(_RECENT_FROM, {**params, "sender": sender}) \
            .scalar() or 0
    return session.connection().execute(_RECENT, params).scalar() or 0


def turned_away(session: Session, stored: Stored) -> bool:
    """Whether a message of the conversation was set aside as one too many new conversations
    (TOO_MANY_NEW_CONVERSATIONS)."""
    return bool(session.connection().execute(
        _TURNED_AWAY, {"conversation_id": stored.conversation.id}).scalar())


def opened_past(session: Session, stored: Stored, most: int) -> bool:
    """Whether the instance opened more than `most` conversations in the minute up to the
    message just stored, the conversation it opened among them.

    Conversations opened at once on the instance are counted one after the other, each seeing
    those before it: on PostgreSQL under a lock held to the end of the transaction (without it,
    each of a burst of strangers could count only itself); SQLite has one writer at a time
    anyway. The fast path's count, which cannot see conversations being opened at this moment,
    answers alone when it is already past `most`."""
    if stored.opened_before is not None and stored.opened_before + 1 > most:
        return True
    connection = session.connection()
    instance = stored.conversation.instance
    if connection.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"new:{instance}".encode()).digest()[:8], "big",
                             signed=True)
        connection.execute(_LOCK_NEW_CONVERSATIONS, {"key": key})
    opened = connection.execute(
        _NEW_ON_INSTANCE, {"instance": instance, "since": _minute_before(stored.at)}).scalar()
    return (opened or 0) > most


_SET_CONFIG = (
    update(_conversations).where(_conversations.c.id == bindparam("conversation_id"))
    .values(workflow_config_id=bindparam("config_id"))
)
_OWN_REPLY = select(exists().where(
    _messages.c.instance == bindparam("instance"),
    _messages.c.provider_message_id == bindparam("wa_id"),
))
_UNANSWERED = select(exists().where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.CUSTOMER,
    _messages.c.reply_run_id.is_(None),
))
_CONVERSATION_OF_CHAT = select(_conversations.c.id).where(
    _conversations.c.instance == bindparam("instance"),
    _conversations.c.chat_jid == bindparam("chat_jid"),
)


def answered_by(session: Session, conversation_id: int, config_id: int) -> None:
    """The conversation is answered by that config from now on."""
    session.connection().execute(
        _SET_CONFIG, {"conversation_id": conversation_id, "config_id": config_id})


def is_own_reply(session: Session, instance: str, wa_message_id: str) -> bool:
    """Whether the instance sent this WhatsApp message as a reply (WhatsApp echoes it back)."""
    return bool(session.connection().execute(
        _OWN_REPLY, {"instance": instance, "wa_id": wa_message_id}).scalar())


def has_unanswered(session: Session, conversation_id: int) -> bool:
    """Whether a customer message of the conversation waits for a reply run."""
    return bool(session.connection().execute(
        _UNANSWERED, {"conversation_id": conversation_id}).scalar())


def message_by_whatsapp_id(session: Session, instance: str, wa_id: str) -> Message | None:
    """The instance's message WhatsApp knows by this id: one it received, or one it sent (its
    provider id); the latest if both."""
    return session.scalars(
        select(Message)
        .where(Message.instance == instance,
               or_(Message.wa_message_id == wa_id, Message.provider_message_id == wa_id))
        .order_by(Message.id.desc()).limit(1)
    ).first()


def recent_customer_messages(session: Session, conversation_id: int,
                             limit: int) -> list[Message]:
    """The conversation's latest customer messages, newest first."""
    return list(session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.role == Role.CUSTOMER)
        .order_by(Message.id.desc()).limit(limit)
    ))


def conversation_of_chat(session: Session, instance: str, chat_jid: str) -> int | None:
    return session.connection().execute(
        _CONVERSATION_OF_CHAT, {"instance": instance, "chat_jid": chat_jid}).scalar()
