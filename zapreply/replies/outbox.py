"""Storing what a run will send: outbox rows (`pending` assistant messages, each with a
deterministic WhatsApp id) written with the run's events, under the lease's fence.

Nothing leaves the process here: `zapreply.replies.deliver` sends the rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from zapreply.llm import business_tools
from zapreply.metrics import series
from zapreply.replies import leases, media
from zapreply.replies.steps import Draft, Generate, Outgoing, RunContext
from zapreply.rules import budget, conversations, notes
from zapreply.rules.options import Options
from zapreply.storage import events
from zapreply.storage import outbox as store
from zapreply.storage.db import autocommit, get_engine
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    Message,
    MessageExtra,
    OutboxStatus,
    ReplyRun,
    Role,
    RunStatus,
    utcnow,
)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class _Addressed(Protocol):
    id: int
    instance: str


@dataclass(frozen=True)
class _ConversationRef:
    id: int
    instance: str


def outbound_message_id(instance: str, run_id: int, seq: int) -> str:
    """Deterministic, WhatsApp-shaped id: a repeated send of the same row is the same message."""
    digest = hashlib.sha256(f"{instance}|{run_id}|{seq}".encode()).hexdigest()
    return "3EB0" + digest[:18].upper()


def reply_texts(texts: list[str], options: Options, most: int | None = None) -> list[str]:
    """The messages to send for the model's texts: split at blank lines if the config says so
    (several short messages read like a person; one wall of text does not), and no more than
    `most` of them."""
    if options.split_paragraphs:
        texts = [part.strip() for text in texts for part in _PARAGRAPH_BREAK.split(text)
                 if part.strip()]
    else:
        texts = list(texts)
    if most is not None and len(texts) > most:
        # Joined into the last message rather than dropped: what comes last is usually the
        # point of the answer (the price, the next step, the handoff text), and the customer
        # still gets all of it, in fewer messages.
        texts = [*texts[:most - 1], "\n\n".join(texts[most - 1:])]
    return texts


def add(session: Session, conversation: _Addressed, run_id: int, texts: list[str], *,
        fallback: bool = False, first_seq: int | None = None,
        extra: MessageExtra | None = None) -> list[Outgoing]:
    """Insert the outbox rows (Core, one statement) and return them, with their ids."""
    # Rows added through the ORM in this transaction (tool calls) keep the lower ids.
    session.flush()
    connection = session.connection()
    # After a replay the run may already hold a sent fallback row: number on from it, since
    # the message id is derived from the position.
    start = first_seq if first_seq is not None else store.next_seq(connection, run_id)
    now = utcnow()
    values = [
        {
            "conversation_id": conversation.id, "instance": conversation.instance,
            "role": Role.ASSISTANT, "content": text, "reply_run_id": run_id,
            "status": OutboxStatus.PENDING,
            "seq": seq, "wa_message_id": outbound_message_id(conversation.instance, run_id, seq),
            "extra": {**(extra or {}), **({"fallback": True} if fallback else {})},
            "created_at": now,
        }
        for seq, text in enumerate(texts, start=start)
    ]
    if not values:
        return []
    ids = store.add(connection, values)
    return [Outgoing(row_id, row["content"], row["wa_message_id"])
            for row_id, row in zip(ids, values, strict=True)]


def close_failed(session: Session, run: ReplyRun, conversation_id: int, reason: str,
                 options: Options, *, kind: str) -> None:
    """The run failed for good (`kind`: a zapreply.metrics.series failure reason): record it,
    and queue the config's fallback text if the run has nothing in the outbox."""
    run.status = RunStatus.FAILED
    run.error = reason
    run.finished_at = utcnow()
    events.record(session, EventType.RUN_FAILED, conversation_id=conversation_id, run_id=run.id,
                  reason=reason, attempts=run.attempts)
    count_failure_on_commit(session, kind)
    fallback = options.fallback_text
    has_outbox = session.scalar(
        select(Message.id).where(Message.reply_run_id == run.id, Message.role == Role.ASSISTANT)
        .limit(1)
    ) is not None
    if fallback and not has_outbox:
        conversation = session.get(Conversation, conversation_id)
        add(session, conversation, run.id, [fallback], fallback=True)


def count_failure_on_commit(session: Session, kind: str) -> None:
    """Count a failed run once its transaction commits: a rolled-back one did not fail."""
    event.listen(session, "after_commit", lambda _session: series.run_failed(kind), once=True)


def llm_events(draft: Draft) -> list[dict[str, Any]]:
    """The payload of each completion's `llm.completed` event."""
    return [
        {"model": completion.model, "round": round_number,
         "prompt_tokens": completion.prompt_tokens,
         "completion_tokens": completion.completion_tokens,
         "cost": completion.cost, "latency_ms": completion.latency_ms,
         "tool_calls": [c.name for c in completion.tool_calls]}
        for round_number, completion in enumerate(draft.completions)
    ]


def _fence(run: RunContext, run_id: int, draft: Draft) -> store.Fence:
    """The lease renewed for another `LEASE_SECONDS`, with the draft's `llm.completed` events."""
    now = utcnow()
    return store.Fence(run.conversation_id, run.token, run_id, now,
                       now + timedelta(seconds=run.settings.lease_seconds), llm_events(draft))


def store_plain_reply(run: RunContext, step: Generate, draft: Draft) -> list[Outgoing] | None:
    """What `fence_and_record_llm_events` and `store_draft` store for a reply that is only
    text, in one statement on PostgreSQL; the outbox rows to deliver. None when the draft needs
    more (see `store_draft`), or off PostgreSQL: nothing was written then."""
    prompt = step.prompt
    texts = reply_texts(draft.texts, prompt.options)
    if (not texts or prompt.first_seq is None or draft.effects.calls
            or len(texts) > run.settings.max_messages_per_run  # its event: see store_draft
            or draft.effects.handoff_reason is not None
            or any(item.media_type for item in prompt.burst)
            or budget.has_budget(prompt.options)
            or get_engine().dialect.name != "postgresql"):
        return None
    rows = [Outgoing(0, text, outbound_message_id(prompt.instance, step.run_id, seq))
            for seq, text in enumerate(texts, start=prompt.first_seq)]
    with autocommit() as connection:
        ids = store.store_plain_reply_postgresql(
            connection, _fence(run, step.run_id, draft), prompt.instance,
            [{"content": row.text, "wa_message_id": row.message_id, "seq": seq}
             for seq, row in enumerate(rows, start=prompt.first_seq)])
    if ids is None:
        raise run.lease_lost(f"lease token {run.token} superseded")
    return [Outgoing(row_id, row.text, row.message_id)
            for row_id, row in zip(ids, rows, strict=True)]


def fence_and_record_llm_events(session: Session, run: RunContext, run_id: int,
                                draft: Draft) -> bool:
    """`leases.fence` plus the draft's `llm.completed` events, in one statement on PostgreSQL.
    Says whether the events were written (elsewhere `store_draft` writes them)."""
    if session.get_bind().dialect.name != "postgresql":
        leases.fence(session, run.conversation_id, run.token, run.settings.lease_seconds)
        return False
    if not store.fence_with_llm_events_postgresql(session.connection(),
                                                  _fence(run, run_id, draft)):
        raise run.lease_lost(f"lease token {run.token} superseded")
    return True


def store_draft(session: Session, run: RunContext, step: Generate, draft: Draft, *,
                llm_events_written: bool = False) -> list[Outgoing]:
    """Store what the run produced; return the outbox rows to deliver (none when it ends
    without a message: a silent handoff, or a failure)."""
    conversation_id, run_id, prompt = run.conversation_id, step.run_id, step.prompt
    if any(item.media_type for item in prompt.burst):
        media.forget_inline(session, run_id)
    if not llm_events_written:
        for payload in llm_events(draft):
            events.record(session, EventType.LLM_COMPLETED, conversation_id=conversation_id,
                          run_id=run_id, **payload)
    _record_tool_calls(session, conversation_id, run_id, prompt.instance, draft)
    if draft.effects.facts:
        _remember(session, conversation_id, draft.effects.facts, prompt.options)
    texts = list(draft.texts)
    if draft.effects.handoff_reason is not None:
        conversation = session.get(Conversation, conversation_id)
        conversations.pause(session, conversation, reason="handoff to human", until=None,
                            actor="assistant")
        events.record(session, EventType.HANDOFF_REQUESTED, conversation_id=conversation_id,
                      run_id=run_id, reason=draft.effects.handoff_reason)
        if prompt.options.handoff_text:
            texts.append(prompt.options.handoff_text)
        if not texts:
            # Handed over with nothing to say: the run is done.
            closed = session.get(ReplyRun, run_id)
            closed.status = RunStatus.SENT
            closed.finished_at = utcnow()
            return []
    if not texts:
        close_failed(session, session.get(ReplyRun, run_id), conversation_id,
                     "the model produced no reply", prompt.options, kind=series.NO_REPLY)
        return []
    most = run.settings.max_messages_per_run
    split = reply_texts(texts, prompt.options)
    if len(split) > most or draft.effects.refused_messages:
        events.record(session, EventType.REPLY_CAPPED, conversation_id=conversation_id,
                      run_id=run_id, limit=most, refused_sends=draft.effects.refused_messages,
                      joined_messages=len(split) - most + 1 if len(split) > most else 0)
    texts = reply_texts(texts, prompt.options, most)
    return add(session, _ConversationRef(conversation_id, prompt.instance), run_id, texts,
               first_seq=prompt.first_seq)


def _record_tool_calls(session: Session, conversation_id: int, run_id: int, instance: str,
                       draft: Draft) -> None:
    for call in draft.effects.calls:
        events.record(session, EventType.TOOL_CALLED, conversation_id=conversation_id,
                      run_id=run_id, name=call["name"], arguments=call["arguments"],
                      result=call["result"][:business_tools.EVENT_RESULT_CHARS],
                      **call.get("details", {}))
        session.add(Message(
            conversation_id=conversation_id, instance=instance, role=Role.TOOL,
            content=call["result"], reply_run_id=run_id,
            extra={"name": call["name"], "arguments": call["arguments"]},
        ))


def _remember(session: Session, conversation_id: int, facts: list[str], options: Options) -> None:
    """Add the facts the model noted to the contact's notes. The run's fence has locked the
    conversation's row in this transaction: an operator's edit lands before or after, whole."""
    conversation = session.get(Conversation, conversation_id)
    conversation.notes, _dropped = notes.with_facts(
        conversation.notes, facts, options.contact_notes_max_chars or notes.MAX_NOTES_CHARS)
