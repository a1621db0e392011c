"""Recording what WhatsApp sent us: the inbound message, once, and its conversation; and the
intake's decisions on it (answer it, set it aside and why, pause for a person). The SQL is the
inbox's (zapreply.storage.inbox)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from zapreply.channel.wuzapi import MAX_QUOTED_CHARS, InboundPayload
from zapreply.replies import media
from zapreply.rules import configs, conversations, groups, staleness, triggers
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.rules.text import is_keyword
from zapreply.storage import contacts, events, inbox
from zapreply.storage.events import EventType
from zapreply.storage.inbox import TOO_MANY_NEW_CONVERSATIONS
from zapreply.storage.models import (
    Conversation,
    Message,
    MessageExtra,
    QuotedMessage,
    ReplyRun,
    Role,
    RunStatus,
    WorkflowConfig,
    extra_of,
    utcnow,
)

# How long a stale message answered with `answer_latest` waits for the rest of its backlog
# (WuzAPI posts a reconnect's backlog within a second or two).
STALE_SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Recorded:
    conversation_id: int
    is_new: bool
    # True when an unanswered customer message is waiting (also on a redelivered duplicate,
    # so a crash between recording and scheduling the reply cannot strand a message).
    needs_reply: bool
    debounce_seconds: float


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
    # One person, one conversation, whether WhatsApp addressed this message by LID or phone.
    chat = message.chat_jid if group \
        else contacts.chat_for(session, instance, message.chat_jid, message.chat_alt_jid)
    contact = inbox.Contact(
        instance=instance, chat_jid=chat,
        contact_phone=None if group else message.contact_phone,
        contact_name=None if from_me or group else message.push_name,
        config_id=config.id if config else None,
        inbound_at=None if from_me else now,
    )
    debounce = config.debounce_seconds if config else 0.0
    wa_id = message.wa_message_id
    if from_me and inbox.is_own_reply(session, instance, wa_id):
        # Our own reply echoed back: not a human taking over.
        conversation = inbox.conversation_for(session, contact, now)
        events.record(session, EventType.MESSAGE_IGNORED, conversation_id=conversation.id,
                      reason="own reply echoed", wa_message_id=wa_id)
        return Recorded(conversation.id, False, False, debounce)

    options = options_of(config) if config else Options()
    stale = None if from_me else staleness.stale_since(options, message.timestamp,
                                                       message.received_at, now)
    if stale is not None:
        # The customer last wrote when they typed it, not when the backlog reached us.
        contact = replace(contact, inbound_at=min(stale, now))
    text, extra = _content(message, options)
    if stale is not None:
        extra["stale"] = True
    quoted = _quoted(session, instance, message)
    if quoted:
        extra["quoted"] = quoted
    reset = not from_me and is_keyword(text, options.reset_keyword)
    if reset:
        extra["reset"] = True
    resume = from_me and is_keyword(text, options.resume_keyword)
    if resume:
        extra["resume"] = True  # a command to the bot, not words to the customer
    stored = inbox.record(
        session, contact,
        inbox.Inbound(role=Role.BUSINESS if from_me else Role.CUSTOMER, content=text,
                      wa_message_id=wa_id, media_type=message.media_type, extra=extra,
                      created_at=now),
        count_opened=not from_me and bool(options.new_conversations_per_minute))
    conversation_id = stored.conversation.id

    if stored.message_id is None:
        events.record(session, EventType.MESSAGE_DUPLICATE, conversation_id=conversation_id,
                      wa_message_id=wa_id)
        return Recorded(conversation_id, False, inbox.has_unanswered(session, conversation_id),
                        debounce)
    if from_me:
        return _from_the_business(session, conversation_id, options, resume=resume, now=now,
                                  debounce=debounce)
    return _from_the_customer(session, _Arrival(message, stored, config, options, text, reset,
                                                stale, now))


def _from_the_business(session: Session, conversation_id: int, options: Options, *,
                       resume: bool, now: datetime, debounce: float) -> Recorded:
    """A message the business typed on its phone: the bot steps aside, or comes back when it
    is the resume keyword."""
    conversation = session.get(Conversation, conversation_id)
    if resume:
        conversations.resume(session, conversation, actor="business")
        return Recorded(conversation_id, True, inbox.has_unanswered(session, conversation_id),
                        debounce)
    # A person at the business answered from the phone: the bot steps aside.
    conversations.pause_for_business(session, conversation, minutes=options.human_pause_minutes,
                                     now=now, actor="business")
    return Recorded(conversation_id, True, False, debounce)


@dataclass(frozen=True)
class _Arrival:
    """A customer message just stored, and what the intake read of it."""

    message: InboundPayload
    stored: inbox.Stored
    config: WorkflowConfig | None
    options: Options
    text: str
    reset: bool
    stale: datetime | None  # when WhatsApp saw it, for a backlog message
    now: datetime


def _from_the_customer(session: Session, arrival: _Arrival) -> Recorded:
    """The rules, in order, that answer a customer message or set it aside (and why)."""
    message, stored, stale, now = arrival.message, arrival.stored, arrival.stale, arrival.now
    conversation, inserted = stored.conversation, stored.message_id
    assert inserted is not None
    group = message.is_group
    config, options = arrival.config, arrival.options
    debounce = config.debounce_seconds if config else 0.0

    def set_aside(reason: str) -> Recorded:
        _set_aside(session, conversation.id, inserted, config, reason)
        return Recorded(conversation.id, True, False, debounce)

    if stale is not None:
        action = options.stale_action
        if action != "answer_latest" or _typed_later_in(session, conversation.id, inserted,
                                                        stale):
            recorded = set_aside(staleness.STALE)
            if action == "handoff":
                _hand_off(session, conversation.id, now)
            return recorded
    if _too_many_new_conversations(session, stored, options, now):
        return set_aside(TOO_MANY_NEW_CONVERSATIONS)
    chosen = triggers.choose_config(session, conversation, config, arrival.text, now, inserted,
                                    accepts=groups.accepts_groups if group else None)
    if chosen is None:
        reason = "no trigger matched"
        if group and not groups.instance_takes_groups(session, conversation.instance):
            reason = "group chat"  # groups were switched off since the receiver looked
        return set_aside(reason)
    if chosen.id != conversation.workflow_config_id:
        inbox.answered_by(session, conversation.id, chosen.id)
    config, options, debounce = chosen, options_of(chosen), chosen.debounce_seconds
    refused = triggers.contact_refused(chosen, conversation,
                                       also=groups.sender_ids(message) if group else ())
    if refused:
        return set_aside(refused)
    if arrival.reset:
        # The customer asked to start over: later replies see nothing before this message.
        recorded = set_aside("session reset")
        events.record(session, EventType.SESSION_RESET, conversation_id=conversation.id,
                      wa_message_id=message.wa_message_id)
        return recorded
    unaddressed = groups.unanswered_reason(session, chosen, conversation.id, message) \
        if group else None
    if unaddressed:
        # Kept in the history as context; answered only when the group talks to the bot.
        return set_aside(unaddressed)
    per_minute = options.rate_limit_per_minute
    # In a group, each member has their own limit.
    member = message.sender_jid if group else None
    if per_minute and inbox.customer_messages_in_the_last_minute(
            session, stored, member) > per_minute:
        return set_aside("rate limited")
    if stale is not None:
        # One reply to the newest of a backlog: wait for the rest of it to land, so the reply
        # answers all of it at once.
        debounce = max(debounce, STALE_SETTLE_SECONDS)
    return Recorded(conversation.id, True, True, debounce)


def _content(message: InboundPayload, options: Options) -> tuple[str, MessageExtra]:
    """The text to keep (cut to `max_input_chars`) and what the row keeps beside it."""
    text = message.text
    extra: MessageExtra = {"timestamp": message.timestamp, "sender": message.sender_jid}
    if message.is_group:
        extra.update(groups.sender_extra(message))
    if message.from_me:
        return text, extra
    limit = options.max_input_chars
    if limit and len(text) > limit:
        extra["truncated_from"] = len(text)
        text = text[:limit]
    if message.media:
        # Where the worker gets the bytes when it answers (see zapreply.replies.media).
        extra["media"] = message.media
    return text, extra


def _quoted(session: Session, instance: str, message: InboundPayload) -> QuotedMessage | None:
    """What the message quotes: our own copy of it when we have one (what was really said,
    also a reply of ours), else the text the quoting message carried."""
    if not message.quoted_id and not message.quoted_text:
        return None
    quoted: QuotedMessage = {"id": message.quoted_id, "sender": message.quoted_sender,
                             "text": message.quoted_text}
    own = inbox.message_by_whatsapp_id(session, instance, message.quoted_id) \
        if message.quoted_id else None
    if own is not None:
        quoted["message_id"] = own.id
        quoted["role"] = own.role
        if own.content:
            quoted["text"] = own.content[:MAX_QUOTED_CHARS]
    return quoted


def _typed_later_in(session: Session, conversation_id: int, message_id: int,
                    typed: datetime) -> bool:
    """Whether the conversation already holds a customer message typed after `typed`: then a
    stale message is not the newest of its backlog (WuzAPI posts in no particular order)."""
    for row in inbox.recent_customer_messages(session, conversation_id, limit=50):
        if row.id == message_id:
            continue
        other = staleness.typed_at(extra_of(row).get("timestamp"))
        if other is not None and other > typed:
            return True
    return False


def _hand_off(session: Session, conversation_id: int, now: datetime) -> None:
    """A backlog with `stale_action` handoff: the conversation waits for a person (once)."""
    conversation = session.get(Conversation, conversation_id)
    if conversations.is_paused(conversation, now):
        return
    conversations.pause(session, conversation, reason="handoff to human", until=None,
                        actor="stale")
    events.record(session, EventType.HANDOFF_REQUESTED, conversation_id=conversation_id,
                  reason=staleness.STALE)


def _too_many_new_conversations(session: Session, stored: inbox.Stored, options: Options,
                                now: datetime) -> bool:
    """Whether a customer's message belongs to a conversation opened past the instance's
    `new_conversations_per_minute`: a flood of strangers must not buy a model call each.

    Only a conversation younger than a minute is looked at. One opened within the limit is
    never turned away later, and one turned away stays so for the rest of its first minute."""
    most = options.new_conversations_per_minute
    if not most or stored.conversation.created_at <= now - timedelta(minutes=1):
        return False
    if not stored.opened_conversation:  # opened by an earlier message
        return inbox.turned_away(session, stored)
    return inbox.opened_past(session, stored, most)


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


def record_ignored(
    session: Session, *, instance: str, reason: str, wa_message_id: str | None,
    chat_jid: str | None, details: dict[str, Any] | None = None,
) -> None:
    conversation_id = inbox.conversation_of_chat(
        session, instance, contacts.chat_for(session, instance, chat_jid, None)) \
        if chat_jid else None
    extra: dict[str, Any] = {}
    if reason == "reaction" and details:
        extra = _record_reaction(session, instance, details)
    events.record(session, EventType.MESSAGE_IGNORED, conversation_id=conversation_id,
                  reason=reason, instance=instance, wa_message_id=wa_message_id, chat=chat_jid,
                  **extra)


def _record_reaction(session: Session, instance: str, details: dict[str, Any]) -> dict[str, Any]:
    """Keep a reaction on the message it reacts to (the latest of each side: WhatsApp allows
    one per person, and an empty emoji takes it back); what the event records of it."""
    target_id = str(details.get("target_id") or "")
    emoji = str(details.get("emoji") or "")
    from_me = bool(details.get("from_me"))
    target = inbox.message_by_whatsapp_id(session, instance, target_id) if target_id else None
    if target is not None:
        extra = dict(extra_of(target))
        kept = [r for r in extra.get("reactions", []) if r.get("from_me") != from_me]
        if emoji:
            kept.append({"emoji": emoji, "from_me": from_me, "at": utcnow().isoformat()})
        extra["reactions"] = kept
        target.extra = extra
    return {"emoji": emoji, "target_wa_message_id": target_id,
            "target_message_id": target.id if target is not None else None}
