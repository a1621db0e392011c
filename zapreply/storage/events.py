"""The events table: one row per step, the audit trail an operator reads."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from zapreply.storage.models import Event, utcnow


class EventType(StrEnum):
    """The event types (SPEC §4), stored as their values."""

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
    BUDGET_EXCEEDED = "budget.exceeded"
    # Outside opening hours: the away message is in the outbox (its delivery is a message.sent).
    AWAY_QUEUED = "away.queued"
    # Media (zapreply.replies.media): a voice note transcribed; media that could not be fetched or
    # transcribed (payload `will_retry`); the config's media fallback text sent instead of a reply.
    MEDIA_TRANSCRIBED = "media.transcribed"
    MEDIA_FAILED = "media.failed"
    MEDIA_FALLBACK = "media.fallback"
    # A reply held to MAX_MESSAGES_PER_RUN: send_whatsapp calls refused, paragraphs joined.
    REPLY_CAPPED = "reply.capped"
    # A send held back by the instance's pace (zapreply.replies.pacing): `delay_seconds`,
    # `reason` (rate, interval, daily_new_conversations); it stays pending in the outbox.
    MESSAGE_PACED = "message.paced"
    # Personal data (zapreply.actions.privacy): a contact erased, rows past their retention deleted;
    # both with counts only, never who.
    CONTACT_ERASED = "contact.erased"
    RETENTION_PURGED = "retention.purged"
    # One person's two conversations (their LID's and their phone's) made one
    # (zapreply.actions.contacts); on the conversation kept.
    CONTACT_MERGED = "contact.merged"
    # An operator changed a contact's notes (the model's own are tool.called `remember`).
    CONTACT_NOTES_UPDATED = "contact.notes_updated"
    # The console (zapreply.actions.operators, outreach, transcripts): who did what, by
    # `actor` (`operator:<username>`); never a password.
    OPERATOR_ADDED = "operator.added"
    OPERATOR_DISABLED = "operator.disabled"
    OPERATOR_ENABLED = "operator.enabled"
    OPERATOR_PASSWORD_RESET = "operator.password_reset"
    OPERATOR_SIGNED_IN = "operator.signed_in"
    OPERATOR_SIGN_IN_FAILED = "operator.sign_in_failed"
    OPERATOR_SIGNED_OUT = "operator.signed_out"
    # An operator wrote to the customer as the business (queued; its delivery is a
    # message.sent or message.failed).
    BUSINESS_MESSAGE_QUEUED = "business.message_queued"
    CONVERSATION_EXPORTED = "conversation.exported"
    CONFIG_CREATED = "config.created"
    CONFIG_UPDATED = "config.updated"
    # An operator tried a message, or a past conversation's last turn, in a config's playground.
    PLAYGROUND_STARTED = "playground.started"
    # A config's webhook secret replaced: the old webhook path is refused from then on.
    CONFIG_SECRET_ROTATED = "config.secret_rotated"
    # A knowledge document read from its URL (zapreply.replies.knowledge_urls): fetched (with
    # whether its text changed), or not (the reason; its previous text stays searchable).
    KNOWLEDGE_FETCHED = "knowledge.fetched"
    KNOWLEDGE_FETCH_FAILED = "knowledge.fetch_failed"


def record(
    session: Session,
    type: EventType,
    *,
    conversation_id: int | None = None,
    run_id: int | None = None,
    **payload: Any,
) -> None:
    """Write one event in the session's transaction, at once: a Core INSERT on its connection
    costs a third of an ORM object's add and flush, and events are never read back here."""
    session.connection().execute(_INSERT, {
        "type": type, "conversation_id": conversation_id, "run_id": run_id,
        "payload": payload, "created_at": utcnow(),
    })


_INSERT = Event.__table__.insert()
