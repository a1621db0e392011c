"""Writing to a customer as the business, from a front door (the console).

The message is recorded as the business's words (role `business`, as if typed on the phone)
and pauses the bot as such a message does (the config's `human_pause_minutes`), in one
transaction; the front door then publishes `replies.send_business` (zapreply.broker.queue)
and a worker sends it through the instance's messages API, the same send path replies take,
retrying what a retry can help. Its WhatsApp id is chosen here, so WuzAPI's echo of it
is recognised as this message and never recorded twice.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.actions.conversations import get_conversation
from zapreply.actions.errors import Conflict, Invalid
from zapreply.rules import configs, conversations
from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import Message, OutboxStatus, Role, WorkflowConfig, utcnow

# WhatsApp's own limit for a text message.
MAX_TEXT = 4096


def write_as_business(session: Session, conversation_id: int, text: Any, *, actor: str,
                      now: datetime | None = None) -> Message:
    """Record `text` as a pending business message and pause the bot; the caller publishes
    the send once this transaction has committed."""
    if not isinstance(text, str) or not text.strip():
        raise Invalid("the message is empty")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise Invalid(f"a message is at most {MAX_TEXT} characters")
    now = now or utcnow()
    conversation = get_conversation(session, conversation_id, for_update=True)
    config = session.get(WorkflowConfig, conversation.workflow_config_id) \
        if conversation.workflow_config_id is not None else None
    if config is None:
        config = session.scalar(
            select(WorkflowConfig).where(WorkflowConfig.instance == conversation.instance,
                                         WorkflowConfig.is_active.is_(True))
            .order_by(WorkflowConfig.id).limit(1))
    if config is None or not (config.send or {}).get("driver"):
        raise Conflict("no workflow config with a messages API for this conversation's "
                       "instance: create or activate one to write from here")
    message = Message(
        conversation_id=conversation.id, instance=conversation.instance, role=Role.BUSINESS,
        content=text, wa_message_id=f"3EB0{secrets.token_hex(9).upper()}",
        status=OutboxStatus.PENDING, extra={"operator": actor, "workflow_config_id": config.id},
        created_at=now,
    )
    session.add(message)
    session.flush()
    events.record(session, EventType.BUSINESS_MESSAGE_QUEUED, conversation_id=conversation.id,
                  actor=actor, message_id=message.id)
    conversations.pause_for_business(
        session, conversation, minutes=configs.options_of(config).human_pause_minutes, now=now,
        actor=actor)
    # The inbox orders by activity.
    conversation.updated_at = now
    session.flush()
    return message
