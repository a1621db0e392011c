"""Personal data (LGPD/GDPR): how long it is kept, a contact's export, a contact's erasure.

Retention: each config's `retention_days` (None keeps forever) bounds the age of its
conversations' messages and events. Every worker runs `purge_expired` on an interval; the rows
go in small batches, each its own transaction, so a large backlog never holds long locks.
Concurrent workers are safe: on PostgreSQL a batch skips the rows another worker's batch has
locked, on SQLite writers take turns; each deletes only what it found and counts only that.

A contact is found under the number or JID asked for and under the other address WhatsApp
paired with it (zapreply.storage.contacts: a LID and a phone JID).

Erasure deletes the contact's one-to-one conversations with everything in them (messages,
media references, runs, events, notes), the pairs of their addresses, the events naming
their chat without a conversation, and in groups the member's own messages, the events and
unsent outbox rows of the runs that took them, and the replies of the runs that answered the
member alone. A reply run in flight cannot bring any of it back: each of its writes is fenced
on the conversation's lease token (zapreply.replies.leases), which a deleted conversation no
longer has, and a group conversation's token is moved on. Neither the erasure's nor the
retention's own event names the contact.
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    exists,
    false,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from zapreply.actions.errors import Invalid
from zapreply.rules.options import Options
from zapreply.settings import get_settings
from zapreply.storage import contacts as addresses_store
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    ContactAddress,
    Conversation,
    ConversationStatus,
    Event,
    Message,
    OutboxStatus,
    ReplyRun,
    Role,
    RunStatus,
    WorkflowConfig,
    extra_of,
    utcnow,
)

log = logging.getLogger(__name__)

# Proof that an erasure was done, with counts only: kept whatever the retention.
_KEPT_FOREVER = (EventType.CONTACT_ERASED,)
_PHONE_PUNCTUATION = re.compile(r"[\s+().\-]")
# E.164: at most 15 digits; fewer than 7 is no one's mobile number.
_MIN_DIGITS, _MAX_DIGITS = 7, 15
# Servers of a person's JID (c.us is the older spelling of s.whatsapp.net).
_PERSON_SERVERS = ("s.whatsapp.net", "c.us", "lid")


class BadContact(Invalid):
    """Not a phone number or a person's WhatsApp JID."""


@dataclass(frozen=True)
class Contact:
    """Who to look for: the phone's digits (None for an @lid JID, which has none) and the
    JIDs a chat or a group member may have been recorded under."""

    phone: str | None
    jids: tuple[str, ...]


def parse_contact(raw: str) -> Contact:
    """'+55 11 90000-0001', '5511900000001', '5511900000001@s.whatsapp.net' (also with a
    ':device' suffix) or '12345678901234@lid'."""
    value = raw.strip()
    if not value or len(value) > 200 or not value.isascii():
        raise BadContact("expected a phone number (digits, '+', spaces, dashes) or a JID")
    if "@" in value:
        user, server = value.split("@", 1)
        user = user.split(":", 1)[0].split(".", 1)[0]
        if server not in _PERSON_SERVERS:
            raise BadContact(f"'@{server[:40]}' is not a person's JID (use "
                             "…@s.whatsapp.net or …@lid)")
        if not (user.isdigit() and _MIN_DIGITS <= len(user) <= 20):
            raise BadContact("the JID's user part must be digits")
        if server == "lid":
            return Contact(None, (f"{user}@lid",))
        digits = user
    else:
        digits = _PHONE_PUNCTUATION.sub("", value)
        if not digits.isdigit():
            raise BadContact("a phone number holds only digits, '+', spaces, dots, dashes "
                             "and parentheses")
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        raise BadContact(f"a phone number has {_MIN_DIGITS} to {_MAX_DIGITS} digits, "
                         "country code included")
    return Contact(digits, (f"{digits}@s.whatsapp.net", f"{digits}@c.us"))


# --- finding a contact's data ------------------------------------------------------------------


def _is_group(column: Any) -> ColumnElement[bool]:
    return column.like("%@g.us")


def own_conversations(contact: Contact) -> ColumnElement[bool]:
    clauses = [Conversation.chat_jid.in_(contact.jids)]
    if contact.phone:
        clauses.append(Conversation.contact_phone == contact.phone)
    return (~_is_group(Conversation.chat_jid)) & or_(*clauses)


def _member_messages(contact: Contact) -> ColumnElement[bool]:
    """A group member's own messages (the conversation is the group's)."""
    clauses = [Message.extra["sender"].as_string().in_(contact.jids)]
    if contact.phone:
        clauses.append(Message.extra["sender_phone"].as_string() == contact.phone)
    groups = select(Conversation.id).where(_is_group(Conversation.chat_jid))
    return (Message.role == Role.CUSTOMER) & Message.conversation_id.in_(groups) & or_(*clauses)


def _chat_events(chats: list[str]) -> ColumnElement[bool]:
    """Events without a conversation that name the chat (a message ignored before any
    conversation existed)."""
    if not chats:
        return false()
    return Event.conversation_id.is_(None) & Event.payload["chat"].as_string().in_(chats)


@dataclass
class _Scope:
    conversation_ids: list[int] = field(default_factory=list)
    chats: list[str] = field(default_factory=list)
    # In groups: the member's messages, their WhatsApp ids, the runs that took them, and the
    # groups they are in.
    member_ids: list[int] = field(default_factory=list)
    member_wa_ids: list[str] = field(default_factory=list)
    member_runs: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    loose_events: list[int] = field(default_factory=list)
    # The contact's LID and phone JID pairs (zapreply.storage.contacts), on any instance.
    addresses: list[ContactAddress] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.conversation_ids or self.member_ids or self.loose_events
                    or self.addresses)


def with_other_forms(contact: Contact, pairs: list[ContactAddress]) -> Contact:
    """The contact with the addresses WhatsApp also knows them by: a number asked for finds
    the conversations of its LID, a LID those of its number."""
    jids = list(contact.jids)
    phone = contact.phone
    for pair in pairs:
        for jid in (pair.lid_jid, pair.phone_jid):
            if jid not in jids:
                jids.append(jid)
        if phone is None:
            phone = pair.phone_jid.split("@", 1)[0]
    return Contact(phone, tuple(jids))


def _scope(session: Session, contact: Contact, *, lock: bool = False) -> _Scope:
    scope = _Scope()
    scope.addresses = addresses_store.addresses(session, None, contact.jids)
    contact = with_other_forms(contact, scope.addresses)
    own = select(Conversation.id, Conversation.chat_jid).where(
        own_conversations(contact)).order_by(Conversation.id)
    if lock:
        # Waits for a responder's fenced write in progress: it lands before this erasure and
        # is erased with the rest, or finds the lease gone and writes nothing.
        own = own.with_for_update()
    for conversation_id, chat in session.execute(own):
        scope.conversation_ids.append(conversation_id)
        scope.chats.append(chat)
    scope.chats = sorted({*scope.chats, *contact.jids})
    for message_id, wa_id, run_id, conversation_id in session.execute(
        select(Message.id, Message.wa_message_id, Message.reply_run_id, Message.conversation_id)
        .where(_member_messages(contact)).order_by(Message.id)
    ):
        scope.member_ids.append(message_id)
        if wa_id:
            scope.member_wa_ids.append(wa_id)
        if run_id is not None and run_id not in scope.member_runs:
            scope.member_runs.append(run_id)
        if conversation_id not in scope.groups:
            scope.groups.append(conversation_id)
    scope.loose_events = list(session.scalars(
        select(Event.id).where(_chat_events(scope.chats)).order_by(Event.id)))
    return scope


def _member_events(scope: _Scope) -> ColumnElement[bool]:
    """Events in the member's groups about the member's messages: of the runs that took them,
    or naming one of them."""
    if not scope.groups:
        return false()
    # Numeric, not integer: ids are 64-bit.
    about = [Event.payload["message_id"].as_numeric(20, 0).in_(scope.member_ids)]
    if scope.member_runs:
        about.append(Event.run_id.in_(scope.member_runs))
    if scope.member_wa_ids:
        about.append(Event.payload["wa_message_id"].as_string().in_(scope.member_wa_ids))
    return Event.conversation_id.in_(scope.groups) & or_(*about)


# --- export ------------------------------------------------------------------------------------


def export_contact(session: Session, contact: Contact) -> dict[str, Any] | None:
    """Everything stored about the contact, as JSON-ready data; None when nothing is."""
    scope = _scope(session, contact)
    if scope.empty:
        return None
    conversations = []
    for conversation in session.scalars(
        select(Conversation).where(Conversation.id.in_(scope.conversation_ids))
        .order_by(Conversation.id)
    ):
        conversations.append({
            **_conversation_view(conversation),
            "messages": [_message_view(row) for row in session.scalars(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(Message.id))],
            "events": [_event_view(row) for row in session.scalars(
                select(Event).where(Event.conversation_id == conversation.id)
                .order_by(Event.id))],
        })
    chats = {row.id: row for row in session.scalars(
        select(Conversation).where(Conversation.id.in_(scope.groups)))}
    group_messages = [
        {**_message_view(row), "conversation_id": row.conversation_id,
         "instance": row.instance, "group_jid": chats[row.conversation_id].chat_jid}
        for row in session.scalars(
            select(Message).where(Message.id.in_(scope.member_ids)).order_by(Message.id))
    ]
    group_events = [_event_view(row) for row in session.scalars(
        select(Event).where(_member_events(scope)).order_by(Event.id))]
    other_events = [_event_view(row) for row in session.scalars(
        select(Event).where(Event.id.in_(scope.loose_events)).order_by(Event.id))]
    return {
        "contact": {"phone": contact.phone, "jids": list(contact.jids)},
        "exported_at": utcnow().isoformat(),
        "conversations": conversations,
        "group_messages": group_messages,
        "group_events": group_events,
        "other_events": other_events,
        "addresses": [{"instance": pair.instance, "lid_jid": pair.lid_jid,
                       "phone_jid": pair.phone_jid, "created_at": _iso(pair.created_at)}
                      for pair in scope.addresses],
    }


def _conversation_view(row: Conversation) -> dict[str, Any]:
    return {
        "id": row.id, "instance": row.instance, "chat_jid": row.chat_jid,
        "contact_phone": row.contact_phone, "contact_name": row.contact_name,
        "status": row.status, "paused_until": _iso(row.paused_until),
        "pause_reason": row.pause_reason, "last_inbound_at": _iso(row.last_inbound_at),
        "notes": row.notes,
        "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
    }


def _message_view(row: Message) -> dict[str, Any]:
    extra: dict[str, Any] = {**extra_of(row)}
    media = extra.get("media")
    if isinstance(media, dict) and "base64" in media:
        # The bytes themselves are kept only until the message is answered; what they were
        # is described by the rest of the reference.
        extra["media"] = {k: v for k, v in media.items() if k != "base64"}
    return {
        "id": row.id, "role": row.role, "content": row.content,
        "wa_message_id": row.wa_message_id, "media_type": row.media_type,
        "status": row.status, "provider_message_id": row.provider_message_id,
        "reply_run_id": row.reply_run_id, "extra": extra,
        "created_at": _iso(row.created_at), "sent_at": _iso(row.sent_at),
    }


def _event_view(row: Event) -> dict[str, Any]:
    return {"id": row.id, "type": row.type, "conversation_id": row.conversation_id,
            "run_id": row.run_id, "payload": row.payload, "created_at": _iso(row.created_at)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- erasure -----------------------------------------------------------------------------------


def erase(contact: Contact, *, actor: str, attempts: int = 3) -> dict[str, int] | None:
    """`erase_contact` in its own transaction, tried again if PostgreSQL chose it to break a
    deadlock: it locks the conversations first and a reply's last send locks its outbox row
    first, so the two can meet (the send gives way, or this does and comes back)."""
    for attempt in range(1, attempts + 1):
        try:
            with session_scope() as session:
                return erase_contact(session, contact, actor=actor)
        except DBAPIError as exc:
            if attempt == attempts or getattr(exc.orig, "sqlstate", None) != "40P01":
                raise
            log.info("erasure chosen to break a deadlock; trying again")
    return None  # pragma: no cover - the loop returns or raises


def erase_contact(session: Session, contact: Contact, *, actor: str) -> dict[str, int] | None:
    """Delete what is stored about the contact, in the caller's transaction, and record a
    `contact.erased` event with the counts; None (nothing written) when nothing is stored."""
    scope = _scope(session, contact, lock=True)
    if scope.empty:
        return None
    connection = session.connection()

    def deleted(statement: Any) -> int:
        return connection.execute(statement).rowcount

    counts = {"conversations": 0, "messages": 0, "events": 0, "runs": 0, "group_messages": 0,
              "addresses": 0}
    ids = scope.conversation_ids
    if ids:
        counts["events"] += deleted(delete(Event).where(Event.conversation_id.in_(ids)))
        counts["messages"] += deleted(delete(Message).where(Message.conversation_id.in_(ids)))
        counts["runs"] += deleted(delete(ReplyRun).where(ReplyRun.conversation_id.in_(ids)))
        # Gone with its lease token: every fenced write of a run in flight finds no row.
        counts["conversations"] += deleted(delete(Conversation).where(Conversation.id.in_(ids)))
    if scope.loose_events:
        counts["events"] += deleted(delete(Event).where(Event.id.in_(scope.loose_events)))
    if scope.member_ids:
        _erase_member(session, scope, counts, deleted)
    if scope.addresses:
        counts["addresses"] += deleted(delete(ContactAddress).where(
            ContactAddress.id.in_([pair.id for pair in scope.addresses])))
    events.record(session, EventType.CONTACT_ERASED, actor=actor, **counts)
    return counts


def _erase_member(session: Session, scope: _Scope, counts: dict[str, int],
                  deleted: Any) -> None:
    # The groups' leases move on first: a run answering the member stops before it writes,
    # and whoever takes the group next answers what the others said, without the member.
    session.connection().execute(
        update(Conversation).where(Conversation.id.in_(sorted(scope.groups)))
        .values(lease_token=Conversation.lease_token + 1, lease_owner=None,
                lease_expires_at=None))
    counts["events"] += deleted(delete(Event).where(_member_events(scope)))
    counts["group_messages"] += deleted(delete(Message).where(Message.id.in_(scope.member_ids)))
    if scope.member_runs:
        # What those runs looked up or drafted, not yet said to the group; and all they said
        # when they answered the member alone (a reply to someone repeats what they wrote).
        others = Message.__table__.alias("others")
        answered_only_the_member = ~exists().where(
            others.c.reply_run_id == Message.reply_run_id, others.c.role == Role.CUSTOMER)
        counts["messages"] += deleted(delete(Message).where(
            Message.reply_run_id.in_(scope.member_runs),
            or_(Message.role == Role.TOOL,
                (Message.role == Role.ASSISTANT) & (Message.status != OutboxStatus.SENT),
                answered_only_the_member),
        ))
        counts["runs"] += deleted(delete(ReplyRun).where(
            ReplyRun.id.in_(scope.member_runs),
            ~exists().where(Message.reply_run_id == ReplyRun.id),
        ))


# --- retention ---------------------------------------------------------------------------------


def purge_expired(
    now: datetime | None = None, batch_size: int | None = None
) -> list[dict[str, Any]]:
    """Delete what each config's `retention_days` no longer keeps; one `retention.purged`
    event per config that lost something. Returns those events' payloads."""
    now = now or utcnow()
    batch_size = batch_size or get_settings().retention_batch_size
    with session_scope() as session:
        configs = session.execute(select(WorkflowConfig.id, WorkflowConfig.options)
                                  .order_by(WorkflowConfig.id)).all()
    plans: list[tuple[int | None, int | None]] = [
        (config_id, Options.of(options).retention_days)
        for config_id, options in configs
    ]
    # Conversations whose config was deleted: the default applies to them.
    plans.append((None, Options().retention_days))
    summaries = []
    for config_id, days in plans:
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        counts = _purge_config(config_id, cutoff, now, batch_size)
        if any(counts.values()):
            summary = {"workflow_config_id": config_id, "retention_days": days,
                       "cutoff": cutoff.isoformat(), **counts}
            with session_scope() as session:
                events.record(session, EventType.RETENTION_PURGED, **summary)
            summaries.append(summary)
    # Events tied to no conversation: kept as long as the longest retention keeps anything.
    longest = [days for _, days in plans[:-1]] or [Options().retention_days]
    if None not in longest:
        cutoff = now - timedelta(days=max(longest))
        loose = select(Event.id).where(
            Event.conversation_id.is_(None), Event.created_at < cutoff,
            Event.type.not_in(_KEPT_FOREVER))
        removed = _in_batches(Event, loose, batch_size)
        if removed:
            summary = {"workflow_config_id": None, "retention_days": max(longest),
                       "cutoff": cutoff.isoformat(), "loose_events": removed}
            with session_scope() as session:
                events.record(session, EventType.RETENTION_PURGED, **summary)
            summaries.append(summary)
    # A pair of addresses outlives no conversation of its person: once the retention has
    # deleted those, the pair goes too (a day's grace: a pair is written with its conversation).
    orphans = select(ContactAddress.id).where(
        ContactAddress.created_at < now - timedelta(days=1),
        ~exists().where(Conversation.instance == ContactAddress.instance,
                        or_(Conversation.chat_jid == ContactAddress.lid_jid,
                            Conversation.chat_jid == ContactAddress.phone_jid)))
    removed = _in_batches(ContactAddress, orphans, batch_size)
    if removed:
        summary = {"workflow_config_id": None, "addresses": removed}
        with session_scope() as session:
            events.record(session, EventType.RETENTION_PURGED, **summary)
        summaries.append(summary)
    return summaries


def _purge_config(config_id: int | None, cutoff: datetime, now: datetime,
                  batch_size: int) -> dict[str, int]:
    owned = (Conversation.workflow_config_id == config_id if config_id is not None
             else Conversation.workflow_config_id.is_(None))
    conversations = select(Conversation.id).where(owned)
    counts = {
        "messages": _in_batches(Message, select(Message.id).where(
            Message.created_at < cutoff, Message.conversation_id.in_(conversations)),
            batch_size),
        "events": _in_batches(Event, select(Event.id).where(
            Event.created_at < cutoff, Event.conversation_id.in_(conversations)),
            batch_size),
        # A run goes once no message points at it (a customer message always comes before
        # its run, so an expired run's burst has expired with it); an open one never.
        "runs": _in_batches(ReplyRun, select(ReplyRun.id).where(
            ReplyRun.created_at < cutoff, ReplyRun.status != RunStatus.RUNNING,
            ReplyRun.conversation_id.in_(conversations),
            ~exists().where(Message.reply_run_id == ReplyRun.id)), batch_size),
    }
    # Emptied, idle past the retention and free: the contact's name and number go with it. A
    # paused conversation stays: its pause is a decision someone made about that chat.
    counts["conversations"] = _in_batches(Conversation, select(Conversation.id).where(
        owned, Conversation.updated_at < cutoff,
        or_(Conversation.lease_expires_at.is_(None), Conversation.lease_expires_at < now),
        or_(Conversation.status != ConversationStatus.PAUSED,
            (Conversation.paused_until.is_not(None)) & (Conversation.paused_until < now)),
        ~exists().where(Message.conversation_id == Conversation.id),
        ~exists().where(Event.conversation_id == Conversation.id),
        ~exists().where(ReplyRun.conversation_id == Conversation.id),
    ), batch_size)
    return counts


def _in_batches(model: Any, ids: Any, batch_size: int) -> int:
    """Delete the rows whose ids `ids` selects, `batch_size` per transaction; how many."""
    table = model.__table__
    # SKIP LOCKED (PostgreSQL; SQLite has one writer at a time anyway): a worker purging at
    # the same moment takes other rows instead of waiting for these.
    batch = ids.order_by(table.c.created_at).limit(batch_size).with_for_update(skip_locked=True)
    total = 0
    while True:
        with session_scope() as session:
            chosen = list(session.scalars(batch))
            if not chosen:
                return total
            removed = session.connection().execute(
                delete(table).where(table.c.id.in_(chosen))).rowcount
        total += removed
        if len(chosen) < batch_size:
            return total


def start() -> threading.Thread:
    """Run `purge_expired` every RETENTION_INTERVAL_SECONDS from a background thread."""
    def loop() -> None:
        interval = get_settings().retention_interval_seconds
        stop = threading.Event()
        # Workers started together do not all purge at the same moment.
        while not stop.wait(interval * random.uniform(0.5, 1.0)):
            try:
                summaries = purge_expired()
            except Exception:  # noqa: BLE001 - database down: try next time
                log.warning("retention purge failed", exc_info=True)
                continue
            for summary in summaries:
                log.info("retention: %s", summary)

    # In the caller's context: the runtime it has bound (worker.app) is the loop's.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,),
                              name="retention", daemon=True)
    thread.start()
    return thread
