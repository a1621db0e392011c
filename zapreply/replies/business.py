"""Sending what an operator wrote as the business (zapreply.actions.outreach recorded it):
through the messages API of the config it names, the same send path replies take, under its
recorded WhatsApp id, so a send repeated after a crash is the same message."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.channel import messaging
from zapreply.settings import get_settings
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    Message,
    OutboxStatus,
    Role,
    WorkflowConfig,
    utcnow,
)


@dataclass(frozen=True)
class Retry(Exception):
    """The send may pass if tried again (timeout, 5xx, 429)."""

    error: str


def send_business_message(message_id: int, *, attempt: int) -> str:
    """Send it unless already sent (or gone); on a failure, record it and raise Retry while
    attempts remain, else mark the message failed. Returns what became of it."""
    settings = get_settings()
    with session_scope() as session:
        message = session.scalar(select(Message).where(
            Message.id == message_id, Message.role == Role.BUSINESS))
        if message is None or message.status != OutboxStatus.PENDING:
            return "nothing to send"
        conversation = session.get(Conversation, message.conversation_id)
        config = session.get(WorkflowConfig, (message.extra or {}).get("workflow_config_id"))
        if conversation is None or config is None:
            _failed(session, message, "its workflow config is gone", attempt, permanent=True)
            return "failed"
        send = dict(config.send or {})
        to = messaging.recipient(conversation.chat_jid, conversation.contact_phone,
                                 str(send.get("driver")))
        text, wa_id = message.content, message.wa_message_id or ""
    try:
        provider_id = messaging.send_text(send, to=to, text=text, message_id=wa_id,
                                          timeout=settings.send_timeout_seconds)
    except messaging.SendError as exc:
        last = exc.permanent or attempt >= settings.send_max_attempts
        with session_scope() as session:
            message = session.get(Message, message_id)
            if message is not None:
                _failed(session, message, str(exc), attempt, permanent=exc.permanent,
                        will_retry=not last, status=exc.status)
        if last:
            return "failed"
        raise Retry(str(exc)) from exc
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None:
            return "sent; the message was erased meanwhile"
        message.status = OutboxStatus.SENT
        message.provider_message_id = provider_id
        message.sent_at = utcnow()
        events.record(session, EventType.MESSAGE_SENT, conversation_id=message.conversation_id,
                      message_id=message.id, provider_message_id=provider_id)
    return "sent"


def _failed(session: Session, message: Message, error: str, attempt: int, *,
            permanent: bool, will_retry: bool = False, status: int | None = None) -> None:
    if not will_retry:
        message.status = OutboxStatus.FAILED
    events.record(session, EventType.MESSAGE_FAILED, conversation_id=message.conversation_id,
                  message_id=message.id, error=error, permanent=permanent, attempt=attempt,
                  will_retry=will_retry, status=status)
