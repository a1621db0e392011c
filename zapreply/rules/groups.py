"""Group chats: which configs answer them, whether a group message is meant for the bot, and
how the model is told who said what.

Per config, option `groups`: "off" (the default: never answered, the receiver drops them),
"on" (answered like any chat: the conversation is the group, the reply goes to the group) or
"mention" (answered only when the message mentions the bot's number or replies to one of its
messages; the others are kept in the history, unanswered, so the model has the context when
someone does address it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from zapreply.channel.wuzapi import InboundPayload
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.rules.text import bot_id, quoted_name
from zapreply.storage.models import (
    Conversation,
    Message,
    MessageExtra,
    Role,
    WorkflowConfig,
    extra_of,
)

NOT_ADDRESSED = "not addressed to the bot"


def is_group_chat(chat_jid: str) -> bool:
    return chat_jid.endswith("@g.us")


def accepts_groups(config: WorkflowConfig) -> bool:
    return (options_of(config).groups or "off") != "off"


def instance_takes_groups(session: Session, instance: str) -> bool:
    """Whether some active config on the instance answers group chats."""
    return any(
        (Options.of(stored).groups or "off") != "off"
        for stored in session.scalars(
            select(WorkflowConfig.options)
            .where(WorkflowConfig.instance == instance, WorkflowConfig.is_active.is_(True))
        )
    )


def bot_ids(options: Options) -> set[str]:
    configured = options.bot_number
    values = configured if isinstance(configured, list) else [configured]
    return {user for value in values if isinstance(value, str) and (user := bot_id(value))}


def addressed(session: Session, conversation_id: int, message: InboundPayload,
              options: Options) -> bool:
    """The message mentions the bot, quotes a message its number sent, or replies to one of
    the replies we recorded (which needs no `bot_number`)."""
    ids = bot_ids(options)
    if ids and any(bot_id(jid) in ids for jid in message.mentions):
        return True
    quoted_sender = message.quoted_sender
    if ids and quoted_sender and bot_id(quoted_sender) in ids:
        return True
    quoted_id = message.quoted_id
    return bool(quoted_id) and bool(session.scalar(select(exists().where(
        Message.conversation_id == conversation_id,
        Message.role == Role.ASSISTANT,
        # WuzAPI sends our deterministic id as the WhatsApp id; other drivers report their own.
        or_(Message.wa_message_id == quoted_id, Message.provider_message_id == quoted_id),
    ))))


def unanswered_reason(session: Session, config: WorkflowConfig, conversation_id: int,
                      message: InboundPayload) -> str | None:
    """Why this config does not answer a group message, or None when it does."""
    options = options_of(config)
    mode = options.groups or "off"
    if mode == "off":
        return "group chat"
    if mode == "mention" and not addressed(session, conversation_id, message, options):
        return NOT_ADDRESSED
    return None


def sender_extra(message: InboundPayload) -> dict[str, str]:
    """What a group message's row keeps about its sender (the conversation is the group)."""
    extra = {"sender_name": message.push_name, "sender_phone": message.contact_phone}
    return {key: value for key, value in extra.items() if value}


def sender_ids(message: InboundPayload) -> list[str]:
    """The group member's JID and number, for the allow- and deny-lists."""
    return [value for value in (message.sender_jid, message.contact_phone) if value]


def sender_label(row: Message) -> str:
    """Who wrote a group message: their WhatsApp name, quoted (it is chosen by the sender, so
    it is data, never instructions: zapreply.rules.text.quoted_name), else their number."""
    extra = extra_of(row)
    sender = extra.get("sender")
    return (quoted_name(extra.get("sender_name")) or extra.get("sender_phone")
            or (sender.split("@", 1)[0] if isinstance(sender, str) else "") or "")


def attributed(row: Message, content: Any) -> Any:
    """A group member's message as the model sees it: '[Name] text'."""
    label = sender_label(row)
    if not label:
        return content
    if isinstance(content, str):
        return f"[{label}] {content}"
    if isinstance(content, list):  # multimodal parts
        return [{"type": "text", "text": f"[{label}]"}, *content]
    return content


def speaker(conversation: Conversation, rows: list[Message]) -> Conversation:
    """For the prompt's {contact_name} and {contact_phone} in a group: the member who wrote
    last. A detached copy, never added to a session."""
    latest = next((row for row in reversed(rows) if row.role == Role.CUSTOMER), None)
    extra = extra_of(latest) if latest is not None else MessageExtra()
    return Conversation(chat_jid=conversation.chat_jid, instance=conversation.instance,
                        contact_name=extra.get("sender_name"),
                        contact_phone=extra.get("sender_phone"))


def tell_the_model(messages: list[dict[str, Any]], rows: list[Message]) -> None:
    """Say in the system message that this is a group and who wrote last."""
    latest = next((row for row in reversed(rows) if row.role == Role.CUSTOMER), None)
    note = ("This is a WhatsApp group chat with several people; each of their messages "
            "starts with the sender's quoted name (or number) in brackets, and your reply goes "
            "to the whole group.")
    if latest is not None and sender_label(latest):
        phone = extra_of(latest).get("sender_phone")
        who = sender_label(latest) + (f" ({phone})" if phone and phone != sender_label(latest)
                                      else "")
        note += f" The latest message is from {who}."
    if messages and messages[0].get("role") == "system":
        messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
    else:
        messages.insert(0, {"role": "system", "content": note})
