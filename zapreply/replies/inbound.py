"""Recording what WhatsApp sent us: the inbound message, once, and its conversation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, Row, and_, bindparam, case, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zapreply.channel.wuzapi import InboundPayload
from zapreply.replies import media
from zapreply.rules import configs, conversations, groups, triggers
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.rules.text import is_keyword
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
    WorkflowConfig,
    utcnow,
)

_conversations = Conversation.__table__
_messages = Message.__table__

# Statements built once per dialect and shape: building one per call costs more CPU than
# running it (see zapreply.replies.leases).
_built: dict[tuple[Any, ...], Any] = {}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert_for(dialect: str):  # type: ignore[no-untyped-def]
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def insert_unless_exists(
    session: Session, model: type, values: dict[str, Any], conflict: list[str]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING in the session's dialect: the new id, or None."""
    dialect = _dialect(session)
    key = ("insert", dialect, model, tuple(values), tuple(conflict))
    statement = _built.get(key)
    if statement is None:
        table = model.__table__  # type: ignore[attr-defined]
        statement = _built[key] = (
            _insert_for(dialect)(table).values({name: bindparam(name) for name in values})
            .on_conflict_do_nothing(index_elements=conflict)
            .returning(table.c.id)
        )
    return session.connection().execute(statement, values).scalar()


@dataclass(frozen=True)
class Recorded:
    conversation_id: int
    is_new: bool
    # True when an unanswered customer message is waiting (also on a redelivered duplicate,
    # so a crash between recording and scheduling the reply cannot strand a message).
    needs_reply: bool
    debounce_seconds: float


def _upsert_statement(dialect: str) -> Any:
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
                # triggers.choose_config).
                "workflow_config_id": func.coalesce(
                    table.c.workflow_config_id, insert.excluded.workflow_config_id),
                "last_inbound_at": func.coalesce(
                    insert.excluded.last_inbound_at, table.c.last_inbound_at),
                "updated_at": insert.excluded.updated_at,
            },
        ).returning(*table.c)
    return _built[key]


def conversation_for(
    session: Session, *, instance: str, chat_jid: str, contact_phone: str | None,
    contact_name: str | None, config_id: int | None, inbound_at: datetime | None = None,
    now: datetime | None = None,
) -> Row[Any]:
    """Get or create the conversation in one statement (an upsert), refreshing what the
    latest message tells about the contact. Its row as it is now: to change the conversation,
    load it (`session.get(Conversation, row.id)`). A conversation it created has `created_at`
    `now`."""
    now = now or utcnow()
    return session.connection().execute(_upsert_statement(_dialect(session)), {
        "instance": instance, "chat_jid": chat_jid, "contact_phone": contact_phone,
        "contact_name": contact_name, "config_id": config_id, "inbound_at": inbound_at,
        "created_at": now, "updated_at": now,
    }).one()


_SET_CONFIG = (
    update(_conversations).where(_conversations.c.id == bindparam("conversation_id"))
    .values(workflow_config_id=bindparam("config_id"))
)


def record_inbound(
    session: Session, *, config_id: int, instance: str, message: dict[str, Any]
) -> Recorded:
    """Record a message an inbound task carries (`message`: its payload, as queued)."""
    return _record(session, config_id, instance, InboundPayload.from_task(message))


def _record(session: Session, config_id: int, instance: str,
            message: InboundPayload) -> Recorded:
    config = configs.get(session, config_id)
    from_me = message.from_me
    # A group's conversation is the group: who wrote each message is kept on the message.
    group = message.is_group
    now = utcnow()
    contact = {
        "instance": instance, "chat_jid": message.chat_jid,
        "contact_phone": None if group else message.contact_phone,
        "contact_name": None if from_me or group else message.push_name,
        "config_id": config.id if config else None,
        "inbound_at": None if from_me else now,
    }
    debounce = config.debounce_seconds if config else 0.0
    wa_id = message.wa_message_id
    if from_me and session.connection().execute(
            _OWN_ECHO, {"instance": instance, "wa_id": wa_id}).scalar():
        # Our own reply echoed back: not a human taking over.
        conversation = conversation_for(session, **contact)
        events.record(session, EventType.MESSAGE_IGNORED, conversation_id=conversation.id,
                      reason="own reply echoed", wa_message_id=wa_id)
        return Recorded(conversation.id, False, False, debounce)

    options = options_of(config) if config else Options()
    text = message.text
    extra: MessageExtra = {"timestamp": message.timestamp, "sender": message.sender_jid}
    if group:
        extra.update(groups.sender_extra(message))
    limit = options.max_input_chars
    if not from_me and limit and len(text) > limit:
        extra["truncated_from"] = len(text)
        text = text[:limit]
    if not from_me and message.media:
        # Where the worker gets the bytes when it answers (see zapreply.replies.media).
        extra["media"] = message.media
    reset = not from_me and is_keyword(text, options.reset_keyword)
    if reset:
        extra["reset"] = True
    resume = from_me and is_keyword(text, options.resume_keyword)
    if resume:
        extra["resume"] = True  # a command to the bot, not words to the customer
    role = Role.BUSINESS if from_me else Role.CUSTOMER
    values = {
        "instance": instance,
        "role": role,
        "content": text,
        "wa_message_id": wa_id,
        "media_type": message.media_type,
        "extra": extra,
        "created_at": now,
    }
    received = {"wa_message_id": wa_id, "role": role, "media_type": message.media_type}
    if _dialect(session) == "postgresql":
        # The conversation and the message in one statement.
        conversation, inserted, recent = _record_with_conversation(
            session, contact, values, received, count_recent=not from_me and not group,
            count_opened=not from_me and bool(options.new_conversations_per_minute))
    else:
        conversation = conversation_for(session, **contact, now=now)
        inserted = insert_unless_exists(session, Message, {
            **values, "conversation_id": conversation.id}, ["instance", "wa_message_id"])
        if inserted is not None:
            events.record(session, EventType.MESSAGE_RECEIVED, conversation_id=conversation.id,
                          **received)
        recent = None

    if inserted is None:
        events.record(session, EventType.MESSAGE_DUPLICATE, conversation_id=conversation.id,
                      wa_message_id=wa_id)
        return Recorded(conversation.id, False, _has_unanswered(session, conversation.id), debounce)
    if from_me:
        if resume:
            conversations.resume(session, session.get(Conversation, conversation.id),
                                 actor="business")
            return Recorded(conversation.id, True, _has_unanswered(session, conversation.id),
                            debounce)
        # A person at the business answered from the phone: the bot steps aside.
        conversations.pause_for_business(
            session, session.get(Conversation, conversation.id),
            minutes=options.human_pause_minutes, now=now, actor="business")
        return Recorded(conversation.id, True, False, debounce)

    if _too_many_new_conversations(session, conversation, instance, options, now):
        _set_aside(session, conversation.id, inserted, config, TOO_MANY_NEW_CONVERSATIONS)
        return Recorded(conversation.id, True, False, debounce)
    chosen = triggers.choose_config(session, conversation, config, text, now, inserted,
                                    accepts=groups.accepts_groups if group else None)
    if chosen is None:
        reason = "no trigger matched"
        if group and not groups.instance_takes_groups(session, instance):
            reason = "group chat"  # groups were switched off since the receiver looked
        _set_aside(session, conversation.id, inserted, config, reason)
        return Recorded(conversation.id, True, False, debounce)
    if chosen.id != conversation.workflow_config_id:
        session.connection().execute(
            _SET_CONFIG, {"conversation_id": conversation.id, "config_id": chosen.id})
    config, options, debounce = chosen, options_of(chosen), chosen.debounce_seconds
    refused = triggers.contact_refused(chosen, conversation,
                                       also=groups.sender_ids(message) if group else ())
    if refused:
        _set_aside(session, conversation.id, inserted, config, refused)
        return Recorded(conversation.id, True, False, debounce)
    if reset:
        # The customer asked to start over: later replies see nothing before this message.
        _set_aside(session, conversation.id, inserted, config, "session reset")
        events.record(session, EventType.SESSION_RESET, conversation_id=conversation.id,
                      wa_message_id=wa_id)
        return Recorded(conversation.id, True, False, debounce)
    unaddressed = groups.unanswered_reason(session, chosen, conversation.id, message) \
        if group else None
    if unaddressed:
        # Kept in the history as context; answered only when the group talks to the bot.
        _set_aside(session, conversation.id, inserted, config, unaddressed)
        return Recorded(conversation.id, True, False, debounce)
    per_minute = options.rate_limit_per_minute
    # In a group, each member has their own limit.
    member = message.sender_jid if group else None
    if recent is None and per_minute:
        recent = _recent_customer_messages(session, conversation.id, now, member)
    if per_minute and recent > per_minute:
        _set_aside(session, conversation.id, inserted, config, "rate limited")
        return Recorded(conversation.id, True, False, debounce)
    return Recorded(conversation.id, True, True, debounce)


TOO_MANY_NEW_CONVERSATIONS = "too many new conversations"
_NEW_ON_INSTANCE = select(func.count()).where(
    _conversations.c.instance == bindparam("instance"),
    _conversations.c.created_at > bindparam("since"),
)
_LOCK_NEW_CONVERSATIONS = select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger())))
_TURNED_AWAY = select(exists().where(
    ReplyRun.conversation_id == bindparam("conversation_id"),
    ReplyRun.status == RunStatus.SKIPPED,
    ReplyRun.error == TOO_MANY_NEW_CONVERSATIONS,
))


def _too_many_new_conversations(session: Session, conversation: Row[Any], instance: str,
                                options: Options, now: datetime) -> bool:
    """Whether a customer's message belongs to a conversation opened past the instance's
    `new_conversations_per_minute`: a flood of strangers must not buy a model call each.

    Only a conversation younger than a minute is looked at. On PostgreSQL the recording
    statement reads what is needed with the message; a message that opens a conversation
    within the limit by that count costs two statements more (a lock and an exact count).
    One opened within the limit is never turned away later, and one turned away stays so for
    the rest of its first minute."""
    most = options.new_conversations_per_minute
    since = now - timedelta(minutes=1)
    if not most or conversation.created_at <= since:
        return False
    connection = session.connection()
    if conversation.created_at != now:  # opened by an earlier message
        turned_away = getattr(conversation, "turned_away", None)  # read with it on PostgreSQL
        if turned_away is None:
            turned_away = connection.execute(
                _TURNED_AWAY, {"conversation_id": conversation.id}).scalar()
        return bool(turned_away)
    before = getattr(conversation, "opened", None)  # counted by the recording statement
    if before is not None and before + 1 > most:
        return True
    # Within the limit by that count, which cannot see conversations being opened at this
    # moment: counted again, one after the other.
    if connection.dialect.name == "postgresql":
        # Conversations opened at once on the instance are counted one after the other, each
        # seeing those before it (a lock to the end of the transaction): without it, each of
        # a burst of strangers could count only itself. SQLite has one writer at a time anyway.
        key = int.from_bytes(hashlib.sha256(f"new:{instance}".encode()).digest()[:8], "big",
                             signed=True)
        connection.execute(_LOCK_NEW_CONVERSATIONS, {"key": key})
    opened = connection.execute(_NEW_ON_INSTANCE, {"instance": instance, "since": since}).scalar()
    return (opened or 0) > most


def _record_with_conversation_statement() -> Any:
    """PostgreSQL: `_upsert_statement`'s conversation, the message unless it is a duplicate,
    its `message.received` event and, when `count_recent`, the count of the customer's messages
    in the last minute (for the rate limit), in one statement. The conversation's row comes back
    with `message_id` (None for a duplicate) and `recent` (that count, read from the snapshot
    before the insert)."""
    key = ("conversation and message", "postgresql")
    if key not in _built:
        events_table = Event.__table__
        conversation = _upsert_statement("postgresql").cte("conversation")
        typed = {name: bindparam(name, type_=_messages.c[name].type)
                 for name in ("role", "content", "wa_message_id", "media_type", "extra")}
        inserted = (
            postgresql.insert(_messages)
            .from_select(
                ["conversation_id", "instance", "role", "content", "wa_message_id",
                 "media_type", "extra", "created_at"],
                select(conversation.c.id, conversation.c.instance, typed["role"],
                       typed["content"], typed["wa_message_id"], typed["media_type"],
                       typed["extra"], bindparam("created_at", type_=_messages.c.created_at.type)),
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
        # Reads the snapshot from before the insert: the new message is added to it.
        recent = select(func.count()).where(
            _messages.c.conversation_id == conversation.c.id,
            _messages.c.role == Role.CUSTOMER,
            _messages.c.created_at > bindparam("since", type_=_messages.c.created_at.type),
        ).scalar_subquery()
        # The instance's conversations opened in the last minute, before this one; only when
        # this message opened one (new_conversations_per_minute).
        opened = select(func.count()).where(
            _conversations.c.instance == conversation.c.instance,
            _conversations.c.created_at > bindparam("since", type_=_messages.c.created_at.type),
        ).scalar_subquery()
        created_at = bindparam("created_at", type_=_messages.c.created_at.type)
        since = bindparam("since", type_=_messages.c.created_at.type)
        count_opened = bindparam("count_opened", type_=Boolean())
        # And, for a later message of a conversation in its first minute, whether that
        # conversation was turned away.
        runs = ReplyRun.__table__
        turned_away = exists().where(runs.c.conversation_id == conversation.c.id,
                                     runs.c.status == RunStatus.SKIPPED,
                                     runs.c.error == TOO_MANY_NEW_CONVERSATIONS)
        _built[key] = select(
            *conversation.c,
            select(inserted.c.id).scalar_subquery().label("message_id"),
            case((bindparam("count_recent", type_=Boolean()), recent)).label("recent"),
            case((and_(count_opened, conversation.c.created_at == created_at), opened))
            .label("opened"),
            case((and_(count_opened, conversation.c.created_at != created_at,
                       conversation.c.created_at > since), turned_away))
            .label("turned_away"),
        ).add_cte(event)
    return _built[key]


def _record_with_conversation(
    session: Session, contact: dict[str, Any], values: dict[str, Any],
    received: dict[str, Any], *, count_recent: bool, count_opened: bool = False,
) -> tuple[Row[Any], int | None, int | None]:
    """An inbound message on PostgreSQL, with its conversation, in one round trip: the
    conversation's row, the new message's id (None for a duplicate) and, when `count_recent`,
    the customer's messages in the last minute with it."""
    row = session.connection().execute(_record_with_conversation_statement(), {
        **contact, **values, "updated_at": values["created_at"],
        "event_type": EventType.MESSAGE_RECEIVED, "payload": received,
        "count_recent": count_recent, "count_opened": count_opened,
        "since": values["created_at"] - timedelta(minutes=1),
    }).one()
    if row.message_id is None or not count_recent:
        return row, row.message_id, None
    return row, row.message_id, row.recent + 1


_RECENT = select(func.count()).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.CUSTOMER,
    _messages.c.created_at > bindparam("since"),
)
_RECENT_FROM = _RECENT.where(_messages.c.extra["sender"].as_string() == bindparam("sender"))
_OWN_ECHO = select(exists().where(
    _messages.c.instance == bindparam("instance"),
    _messages.c.provider_message_id == bindparam("wa_id"),
))
_UNANSWERED = select(exists().where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.CUSTOMER,
    _messages.c.reply_run_id.is_(None),
))


def _recent_customer_messages(session: Session, conversation_id: int, now: datetime,
                              sender: str | None = None) -> int:
    params = {"conversation_id": conversation_id, "since": now - timedelta(minutes=1)}
    if sender:
        return session.connection().execute(_RECENT_FROM, {**params, "sender": sender}) \
            .scalar() or 0
    return session.connection().execute(_RECENT, params).scalar() or 0


def _set_aside(session: Session, conversation_id: int, message_id: int,
               config: WorkflowConfig | None, reason: str) -> None:
    """Record a customer message as handled without a reply."""
    run = ReplyRun(conversation_id=conversation_id, status=RunStatus.SKIPPED, attempts=0,
                   error=reason, workflow_config_id=config.id if config else None,
                   finished_at=utcnow())
    session.add(run)
    session.flush()
    message = session.get(Message, message_id)
    message.reply_run_id = run.id
    media.drop_inline(message)  # never answered: its bytes are not needed
    events.record(session, EventType.MESSAGE_IGNORED, conversation_id=conversation_id,
                  run_id=run.id, reason=reason, message_id=message_id)


def _has_unanswered(session: Session, conversation_id: int) -> bool:
    return bool(session.connection().execute(
        _UNANSWERED, {"conversation_id": conversation_id}).scalar())


def record_ignored(
    session: Session, *, instance: str, reason: str, wa_message_id: str | None,
    chat_jid: str | None,
) -> None:
    conversation_id = None
    if chat_jid:
        conversation_id = session.scalar(select(Conversation.id).where(
            Conversation.instance == instance, Conversation.chat_jid == chat_jid,
        ))
    events.record(session, EventType.MESSAGE_IGNORED, conversation_id=conversation_id,
                  reason=reason, instance=instance, wa_message_id=wa_message_id, chat=chat_jid)
