"""A conversation as the customer saw it, with each reply's run beside it; exported as JSON
or as a readable text; started afresh by an operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.actions.conversations import get_conversation
from zapreply.actions.errors import Conflict
from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, Role, utcnow

# The messages a page shows (older ones: the page before, or the export).
TRANSCRIPT_LIMIT = 300
_RUN_EVENTS = (EventType.LLM_COMPLETED, EventType.LLM_FAILED, EventType.TOOL_CALLED,
               EventType.MESSAGE_FAILED, EventType.RUN_FAILED, EventType.RUN_REPLAYED,
               EventType.HANDOFF_REQUESTED, EventType.REPLY_CAPPED)


@dataclass
class RunSummary:
    run: ReplyRun
    models: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    latency_ms: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    replays: int = 0


@dataclass
class Transcript:
    conversation: Conversation
    messages: list[Message]
    runs: dict[int, RunSummary]
    # Older messages exist: pass the first message's id as `before` to read them.
    truncated: bool
    # The page ends before this message id (None: the newest messages).
    before: int | None = None


def transcript(session: Session, conversation_id: int, limit: int = TRANSCRIPT_LIMIT,
               before: int | None = None) -> Transcript:
    """The newest `limit` messages (before the message id `before`, when given), oldest first:
    keyset-paged on ix_messages_conversation_id, so a conversation of any length reads one
    page of rows."""
    conversation = get_conversation(session, conversation_id)
    statement = select(Message).where(Message.conversation_id == conversation.id,
                                      Message.role != Role.TOOL)
    if before is not None:
        statement = statement.where(Message.id < before)
    newest = list(session.scalars(statement.order_by(Message.id.desc()).limit(limit + 1)))
    truncated = len(newest) > limit
    messages = list(reversed(newest[:limit]))
    run_ids = sorted({m.reply_run_id for m in messages if m.reply_run_id is not None})
    runs = {run.id: RunSummary(run) for run in session.scalars(
        select(ReplyRun).where(ReplyRun.id.in_(run_ids)))} if run_ids else {}
    if runs:
        for event in session.scalars(select(Event).where(
                Event.run_id.in_(list(runs)), Event.type.in_(_RUN_EVENTS)).order_by(Event.id)):
            _add(runs[event.run_id], event)
    return Transcript(conversation, messages, runs, truncated, before)


def _add(summary: RunSummary, event: Event) -> None:
    payload = event.payload or {}
    if event.type == EventType.LLM_COMPLETED:
        model = payload.get("model")
        if model and model not in summary.models:
            summary.models.append(model)
        summary.prompt_tokens += int(payload.get("prompt_tokens") or 0)
        summary.completion_tokens += int(payload.get("completion_tokens") or 0)
        if payload.get("cost") is not None:
            summary.cost = (summary.cost or 0.0) + float(payload["cost"])
        summary.latency_ms += float(payload.get("latency_ms") or 0)
    elif event.type == EventType.TOOL_CALLED:
        summary.tool_calls.append({"name": payload.get("name"),
                                   "arguments": payload.get("arguments"),
                                   "result": payload.get("result")})
    elif event.type == EventType.RUN_REPLAYED:
        summary.replays += 1
    elif event.type in (EventType.LLM_FAILED, EventType.MESSAGE_FAILED, EventType.RUN_FAILED):
        summary.failures.append({"type": event.type, "at": event.created_at,
                                 "error": payload.get("error") or payload.get("reason"),
                                 "attempt": payload.get("attempt"),
                                 "will_retry": payload.get("will_retry")})


def start_fresh_session(session: Session, conversation_id: int, *, actor: str) -> None:
    """Later replies see nothing before now: the newest message is marked as where the
    conversation restarted, as the customer's reset keyword does."""
    conversation = get_conversation(session, conversation_id, for_update=True)
    last = session.scalar(select(Message).where(Message.conversation_id == conversation.id)
                          .order_by(Message.id.desc()).limit(1))
    if last is None:
        raise Conflict("the conversation has no messages yet")
    last.extra = {**(last.extra or {}), "reset": True}
    conversation.updated_at = utcnow()
    events.record(session, EventType.SESSION_RESET, conversation_id=conversation.id,
                  actor=actor, message_id=last.id)
    session.flush()


def export(session: Session, conversation_id: int, *, actor: str) -> dict[str, Any]:
    """The whole conversation, messages and events, as JSON-ready data; the export itself is
    recorded (who, never what)."""
    conversation = get_conversation(session, conversation_id)
    messages = list(session.scalars(select(Message).where(
        Message.conversation_id == conversation.id).order_by(Message.id)))
    found = list(session.scalars(select(Event).where(
        Event.conversation_id == conversation.id).order_by(Event.id)))
    events.record(session, EventType.CONVERSATION_EXPORTED, conversation_id=conversation.id,
                  actor=actor)
    return {
        "conversation": {
            "id": conversation.id, "instance": conversation.instance,
            "chat_jid": conversation.chat_jid, "contact_phone": conversation.contact_phone,
            "contact_name": conversation.contact_name, "created_at": _iso(conversation.created_at),
        },
        "exported_at": _iso(utcnow()),
        "messages": [{
            "id": m.id, "role": m.role, "content": m.content, "media_type": m.media_type,
            "status": m.status, "reply_run_id": m.reply_run_id,
            "created_at": _iso(m.created_at), "sent_at": _iso(m.sent_at),
            **({"tool": {"name": (m.extra or {}).get("name"),
                         "arguments": (m.extra or {}).get("arguments")}}
               if m.role == Role.TOOL else {}),
        } for m in messages],
        "events": [{"id": e.id, "type": e.type, "run_id": e.run_id, "payload": e.payload,
                    "created_at": _iso(e.created_at)} for e in found],
    }


SPEAKERS = {Role.CUSTOMER: "Customer", Role.ASSISTANT: "Bot", Role.BUSINESS: "Business"}


def as_text(data: dict[str, Any]) -> str:
    """The export as a transcript a person reads: one line a message, tool calls left out."""
    conversation = data["conversation"]
    who = conversation["contact_name"] or conversation["contact_phone"] or conversation["chat_jid"]
    lines = [f"Conversation {conversation['id']} with {who} on {conversation['instance']}",
             f"Exported {data['exported_at']}", ""]
    for message in data["messages"]:
        speaker = SPEAKERS.get(message["role"])
        if speaker is None:
            continue
        media = f"[{message['media_type']}] " if message["media_type"] else ""
        status = f" ({message['status']})" if message["status"] not in (None, "sent") else ""
        lines.append(f"[{message['created_at']}] {speaker}{status}: {media}{message['content']}")
    return "\n".join(lines) + "\n"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
