"""What the model is asked: the system prompt and the conversation's history, in the order the
conversation went, as chat messages (with the burst's media noted for `zapreply.replies.media`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zapreply.llm import business_tools
from zapreply.replies import media
from zapreply.rules import groups, notes
from zapreply.rules.configs import has_knowledge, options_of
from zapreply.rules.options import Options
from zapreply.rules.text import quoted_name
from zapreply.settings import Settings
from zapreply.storage import runs
from zapreply.storage.models import (
    Conversation,
    Message,
    Role,
    WorkflowConfig,
    extra_of,
    utcnow,
)

# Option knowledge_only: the business wants no answer that its documents do not back.
KNOWLEDGE_ONLY = (
    "Answer questions about the business (products, prices, policies, hours, delivery) only "
    "with what the search_knowledge tool returns, and search before answering them. When it "
    "finds nothing relevant, say you do not have that information, or hand the conversation "
    "to a person with handoff_to_human if the customer needs an answer. Never invent prices, "
    "policies or other facts."
)


@dataclass
class Prompt:
    """The model's input for one run, and what storing its answer needs to know."""

    config_id: int
    model: str
    messages: list[dict[str, Any]]
    options: Options
    # Where this run's outbox numbering starts (0 for a new run); None: read it when storing
    # (a replay may have left a fallback row).
    first_seq: int | None = None
    instance: str = ""
    # The customer messages this run answers, and what their media still need.
    burst: list[media.Item] = field(default_factory=list)
    # Whose conversation it is, as the business's tools are told.
    identity: business_tools.Identity | None = None
    # The config has a knowledge base: the model gets search_knowledge.
    knowledge: bool = False
    # contact_memory: the model gets remember; the contact's notes as the run started.
    memory: bool = False
    notes: str | None = None


def build(
    session: Session, conversation: Conversation, run_id: int, config: WorkflowConfig,
    settings: Settings, *, newest: int | None = None, first_seq: int | None = None,
) -> Prompt:
    """The prompt of run `run_id` (`newest`: the id of its burst's last message, if
    known)."""
    options = options_of(config)
    if newest is None:
        newest = session.scalar(
            select(func.max(Message.id))
            .where(Message.reply_run_id == run_id, Message.role == Role.CUSTOMER)
        )
    limit = options.history_limit or settings.history_limit
    rows = session.connection().execute(runs.HISTORY, {
        "conversation_id": conversation.id, "newest": newest or 0, "limit": limit,
    }).all()
    rows = _in_typed_order(_in_reply_order(session, [
        row for row in rows
        # The fallback of this very run is not part of what it answers (after a replay).
        if not (row.reply_run_id == run_id and extra_of(row).get("fallback"))
        # The business's resume keyword was said to the bot, not to the customer.
        and not extra_of(row).get("resume")
    ]))
    rows = _current_session(rows, options.session_idle_hours)
    messages: list[dict[str, Any]] = []
    group = groups.is_group_chat(conversation.chat_jid)
    knowledge = has_knowledge(session, config.id)
    system = ""
    if config.system_prompt:
        # In a group, {contact_name} and {contact_phone} are the member who wrote last.
        who = groups.speaker(conversation, rows) if group else conversation
        system = render_prompt(config.system_prompt, who, options)
    if knowledge and options.knowledge_only:
        system = f"{system}\n\n{KNOWLEDGE_ONLY}" if system else KNOWLEDGE_ONLY
    memory = bool(options.contact_memory) and not group
    remembered = notes.for_the_model(conversation.notes) if memory else ""
    if remembered:
        system = f"{system}\n\n{remembered}" if system else remembered
    if system:
        messages.append({"role": "system", "content": system})
    burst: list[media.Item] = []
    for row in rows:
        if row.role == Role.CUSTOMER and row.reply_run_id == run_id:
            burst.append(media.Item.of(row, len(messages), options, config.model,
                                       label=groups.sender_label(row) if group else ""))
        messages.append(_chat_message(row, group))
    if group:
        before = len(messages)
        groups.tell_the_model(messages, rows)
        for item in burst:  # a system note put in front of them moves them on
            item.index += len(messages) - before
    identity = business_tools.Identity(conversation.instance, conversation.id,
                                       conversation.chat_jid, conversation.contact_phone)
    return Prompt(config.id, config.model, messages, options, first_seq=first_seq,
                  instance=conversation.instance, burst=burst, identity=identity,
                  knowledge=knowledge, memory=memory,
                  notes=conversation.notes if memory else None)


def _chat_message(row: Message, group: bool) -> dict[str, Any]:
    content = media.describe(row) if row.media_type else row.content
    if row.role == Role.CUSTOMER:
        content = with_quote(row, content)
        return {"role": "user", "content": groups.attributed(row, content) if group else content}
    if row.role == Role.BUSINESS:
        # Written by a person at the business on their phone: part of what "we" said.
        return {"role": "assistant", "content": content, "name": "business"}
    return {"role": "assistant", "content": content}


def with_quote(row: Message, content: Any) -> Any:
    """A customer message that quotes (replies to) another, as the model sees it: the quoted
    text first, so "yes, that one" has its "that"."""
    quoted = extra_of(row).get("quoted")
    if not quoted or not quoted.get("text") or not isinstance(content, str):
        return content
    whose = "our message" if quoted.get("role") in (Role.ASSISTANT, Role.BUSINESS) else "message"
    text = quoted["text"].replace("\n", " ")
    return f'[replying to {whose}: "{text}"]\n{content}'


def _in_reply_order(session: Session, rows: list[Message]) -> list[Message]:
    """Rows as the conversation went: each reply right after the burst it answered.

    Ids alone are not that order: a message that arrives while a reply is being generated is
    recorded before the reply is.
    """
    run_ids = {row.reply_run_id for row in rows if row.role != Role.CUSTOMER and row.reply_run_id}
    # The rows are the newest of the conversation: a run whose customer messages are among
    # them has its last one there too. Only runs older than the window need a query.
    burst_end: dict[int, int] = {}
    for row in rows:
        if row.role == Role.CUSTOMER and row.reply_run_id in run_ids:
            burst_end[row.reply_run_id] = max(burst_end.get(row.reply_run_id, 0), row.id)
    missing = run_ids - burst_end.keys()
    if missing:
        burst_end.update(session.execute(
            select(Message.reply_run_id, func.max(Message.id))
            .where(Message.reply_run_id.in_(missing), Message.role == Role.CUSTOMER)
            .group_by(Message.reply_run_id)
        ).all())

    def position(row: Message) -> tuple[int, int, int]:
        if row.role == Role.CUSTOMER or row.reply_run_id not in burst_end:
            return row.id, 0, row.id
        return burst_end[row.reply_run_id], 1, row.id

    return sorted(rows, key=position)
def _in_typed_order(rows: list[Message]) -> list[Message]:
    """Each run of consecutive customer messages in the order the customer typed them.

    WuzAPI posts every message from its own goroutine and our workers record them in whatever
    order they commit, so a burst's ids say nothing; WhatsApp's timestamp does. Only within a
    run of customer messages: across our own replies, ids (one clock) are the truer order.
    """
    ordered: list[Message] = []
    burst: list[Message] = []
    for row in [*rows, None]:
        if row is not None and row.role == Role.CUSTOMER:
            burst.append(row)
            continue
        burst.sort(key=_typed_at)
        ordered.extend(burst)
        burst = []
        if row is not None:
            ordered.append(row)
    return ordered


def _typed_at(row: Message) -> tuple[datetime, int]:
    raw = extra_of(row).get("timestamp")
    try:
        typed = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        typed = None
    if typed is None or typed.tzinfo is None:
        typed = row.created_at
    return typed, row.id


def _current_session(rows: list[Message], idle_hours: float | None) -> list[Message]:
    """The messages since the conversation last started afresh: after a reset keyword, or
    after a silence longer than `idle_hours`."""
    start = 0
    for index, row in enumerate(rows):
        if extra_of(row).get("reset"):
            start = index + 1
        elif index and idle_hours and (
            row.created_at - rows[index - 1].created_at > timedelta(hours=idle_hours)
        ):
            start = index
    return rows[start:]


_PLACEHOLDER = re.compile(r"\{(contact_name|contact_phone|now|date|time|weekday)\}")


def render_prompt(template: str, conversation: Conversation, options: Options) -> str:
    """Fill {contact_name}, {contact_phone}, {now}, {date}, {time} and {weekday} (in the
    config's timezone); any other brace stays as written."""
    try:
        zone = ZoneInfo(options.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    now = utcnow().astimezone(zone)
    values = {
        # Written by the customer: data for the model, never instructions (zapreply.rules.text).
        "contact_name": quoted_name(conversation.contact_name),
        "contact_phone": conversation.contact_phone or "",
        "now": now.isoformat(timespec="minutes"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


