"""The events table: one row per step, the audit trail an operator reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from zapreply.models import Event

# Event types (SPEC §4).
MESSAGE_RECEIVED = "message.received"
MESSAGE_IGNORED = "message.ignored"
MESSAGE_DUPLICATE = "message.duplicate"
LLM_COMPLETED = "llm.completed"
LLM_FAILED = "llm.failed"
TOOL_CALLED = "tool.called"
MESSAGE_SENT = "message.sent"
MESSAGE_FAILED = "message.failed"
CONVERSATION_PAUSED = "conversation.paused"
CONVERSATION_RESUMED = "conversation.resumed"
HANDOFF_REQUESTED = "handoff.requested"
RUN_FAILED = "run.failed"
RUN_REPLAYED = "run.replayed"
SESSION_RESET = "session.reset"
# Media (zapreply.media): a voice note transcribed; media that could not be fetched or
# transcribed (payload `will_retry`); the config's media fallback text sent instead of a reply.
MEDIA_TRANSCRIBED = "media.transcribed"
MEDIA_FAILED = "media.failed"
MEDIA_FALLBACK = "media.fallback"


def record(
    session: Session,
    type: str,
    *,
    conversation_id: int | None = None,
    run_id: int | None = None,
    **payload: Any,
) -> Event:
    event = Event(type=type, conversation_id=conversation_id, run_id=run_id, payload=payload)
    session.add(event)
    return event
