"""A config's playground: try its bot before (or without) connecting WhatsApp.

A turn is a message typed by an operator, or a past conversation's last customer turn
replayed, recorded here as a queued row of `playground_turns`; the front door then publishes
`playground.answer_turn` and a worker answers it (zapreply.replies.playground), streaming the
model's text into the row. Turns are never conversations: not in the inbox, not in a
contact's export, not in a budget's usage or the dashboards. Edits not saved yet (the system
prompt, the model) can be tried on a turn without touching the stored config.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from zapreply.actions.configs import get_config
from zapreply.actions.errors import Invalid, NotFound
from zapreply.rules import configs
from zapreply.storage import events
from zapreply.storage import playground as store
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    Message,
    OutboxStatus,
    PlaygroundKind,
    PlaygroundStatus,
    PlaygroundTurn,
    Role,
    WorkflowConfig,
    utcnow,
)

# WhatsApp's own limit for a text message.
MAX_TEXT = 4096
MAX_SYSTEM_PROMPT = 20_000
# The chat a replay belongs to: never a chat's token (hex), so never in a chat's history.
REPLAY_CHAT = "replay"
_CHAT = re.compile(r"^[0-9a-f]{16}$")
REPLAYABLE = 50
STALE = ("No worker finished this turn in time (none running, or the one answering it "
         "stopped); send it again.")


@dataclass(frozen=True)
class Edits:
    """What the operator changed on the playground's page and did not save."""

    system_prompt: str | None = None
    model: str | None = None


def new_chat() -> str:
    return secrets.token_hex(8)


def parse_chat(raw: Any) -> str:
    if not isinstance(raw, str) or not _CHAT.match(raw):
        raise Invalid("'chat' must be the 16 hexadecimal characters of a playground chat")
    return raw


def start_chat_turn(session: Session, config_id: int, chat: str, text: Any, *, dry_run: bool,
                    edits: Edits | None = None, actor: str) -> PlaygroundTurn:
    """Record a message typed in the playground's chat `chat`, queued for a worker; the
    caller publishes it once this transaction has committed."""
    config = get_config(session, config_id)
    chat = parse_chat(chat)
    if not isinstance(text, str) or not text.strip():
        raise Invalid("the message is empty")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise Invalid(f"a message is at most {MAX_TEXT} characters")
    return _add(session, config, PlaygroundTurn(
        chat=chat, kind=PlaygroundKind.CHAT, customer_text=text), dry_run, edits, actor)


def start_replay(session: Session, config_id: int, conversation_id: Any, *, dry_run: bool,
                 edits: Edits | None = None, actor: str) -> PlaygroundTurn:
    """Record the last customer turn of a past conversation of this config, with what the
    customer was sent then, to be answered again against the config (and `edits`)."""
    config = get_config(session, config_id)
    if isinstance(conversation_id, bool) or not isinstance(conversation_id, int) \
            or conversation_id <= 0:
        raise Invalid("pick a conversation to replay")
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or not _belongs(conversation, config):
        raise Invalid(f"conversation {conversation_id} is not one of this config's")
    last = session.scalar(
        select(Message).where(Message.conversation_id == conversation.id,
                              Message.role == Role.CUSTOMER)
        .order_by(Message.id.desc()).limit(1))
    if last is None:
        raise Invalid(f"conversation {conversation_id} has no customer message to replay")
    return _add(session, config, PlaygroundTurn(
        chat=REPLAY_CHAT, kind=PlaygroundKind.REPLAY,
        customer_text=_last_turn_text(session, last),
        replayed_conversation_id=conversation.id, replayed_message_id=last.id,
        old_answer=_sent_after(session, last)), dry_run, edits, actor)


def _add(session: Session, config: WorkflowConfig, turn: PlaygroundTurn, dry_run: bool,
         edits: Edits | None, actor: str) -> PlaygroundTurn:
    turn.workflow_config_id = config.id
    turn.dry_run = bool(dry_run)
    turn.overrides = _overrides(config, edits or Edits())
    turn.actor = actor
    turn.status = PlaygroundStatus.QUEUED
    turn.streamed = ""
    turn.tool_calls = []
    session.add(turn)
    session.flush()
    events.record(session, EventType.PLAYGROUND_STARTED, actor=actor,
                  workflow_config_id=config.id, turn_id=turn.id, kind=turn.kind,
                  dry_run=turn.dry_run, edited=sorted(turn.overrides),
                  replayed_conversation_id=turn.replayed_conversation_id)
    return turn


def _overrides(config: WorkflowConfig, edits: Edits) -> dict[str, str]:
    """The edits that differ from the stored config, checked as saving them would be."""
    found: dict[str, str] = {}
    if edits.system_prompt is not None:
        prompt = edits.system_prompt.replace("\r\n", "\n")
        if len(prompt) > MAX_SYSTEM_PROMPT:
            raise Invalid(f"'system_prompt' must be at most {MAX_SYSTEM_PROMPT} characters")
        if prompt.strip() != (config.system_prompt or "").strip():
            found["system_prompt"] = prompt
    if edits.model is not None and edits.model.strip() \
            and edits.model.strip() != config.model:
        try:
            found["model"] = configs.validate({"model": edits.model}, partial=True)["model"]
        except configs.InvalidConfig as exc:
            raise Invalid(str(exc)) from None
    return found


def _belongs(conversation: Conversation, config: WorkflowConfig) -> bool:
    if conversation.workflow_config_id is not None:
        return conversation.workflow_config_id == config.id
    return conversation.instance == config.instance


def _last_turn_text(session: Session, last: Message) -> str:
    """The customer messages since the last thing said to them, up to `last`, one a line."""
    said_before = session.scalar(
        select(func.max(Message.id)).where(Message.conversation_id == last.conversation_id,
                                           Message.role != Role.CUSTOMER,
                                           Message.id < last.id)) or 0
    rows = session.scalars(
        select(Message).where(Message.conversation_id == last.conversation_id,
                              Message.role == Role.CUSTOMER,
                              Message.id > said_before, Message.id <= last.id)
        .order_by(Message.id)).all()
    return "\n".join(_shown(row) for row in rows)


def _sent_after(session: Session, last: Message) -> str | None:
    """What the bot sent after the customer's last message (None: nothing)."""
    texts = session.scalars(
        select(Message.content).where(Message.conversation_id == last.conversation_id,
                                      Message.role == Role.ASSISTANT,
                                      Message.status == OutboxStatus.SENT,
                                      Message.id > last.id)
        .order_by(Message.id)).all()
    return "\n\n".join(t for t in texts if t) or None


def _shown(row: Message) -> str:
    if row.media_type:
        return f"[{row.media_type}] {row.content or ''}".strip()
    return row.content or ""


def chat_turns(session: Session, config_id: int, chat: str) -> list[PlaygroundTurn]:
    return store.chat_turns(session, config_id, parse_chat(chat))


def replays(session: Session, config_id: int, *, limit: int = 10) -> list[PlaygroundTurn]:
    """The latest replays of this config, newest first."""
    return list(session.scalars(
        select(PlaygroundTurn).where(PlaygroundTurn.workflow_config_id == config_id,
                                     PlaygroundTurn.chat == REPLAY_CHAT)
        .order_by(PlaygroundTurn.id.desc()).limit(limit)).all())


def get_turn(session: Session, config_id: int, turn_id: int) -> PlaygroundTurn:
    turn = session.get(PlaygroundTurn, turn_id)
    if turn is None or turn.workflow_config_id != config_id:
        raise NotFound(f"playground turn {turn_id} not found")
    return turn


def progress(session: Session, config_id: int, turn_id: int, *,
             stale_seconds: float) -> tuple[str, str]:
    """A turn's status and its text so far (what the page streams). A turn with nothing
    written for `stale_seconds` (the task time limit: a worker would have been stopped by
    then) is failed instead of followed for ever."""
    get_turn(session, config_id, turn_id)
    found = store.progress(session, turn_id)
    if found is None:
        raise NotFound(f"playground turn {turn_id} not found")
    status, text, written = found
    if status in (PlaygroundStatus.QUEUED, PlaygroundStatus.RUNNING) \
            and written < utcnow() - timedelta(seconds=stale_seconds):
        give_up_stale(session, config_id, stale_seconds=stale_seconds)
        return PlaygroundStatus.FAILED, text
    return status, text


def give_up_stale(session: Session, config_id: int, *, stale_seconds: float) -> None:
    """Fail this config's turns that no worker answered within `stale_seconds`."""
    store.give_up_stale(session, config_id, utcnow() - timedelta(seconds=stale_seconds),
                        STALE)


def replayable(session: Session, config: WorkflowConfig) -> list[Conversation]:
    """This config's conversations that have a customer message, latest activity first."""
    mine = or_(Conversation.workflow_config_id == config.id,
               and_(Conversation.workflow_config_id.is_(None),
                    Conversation.instance == config.instance))
    spoke = exists().where(Message.conversation_id == Conversation.id,
                           Message.role == Role.CUSTOMER)
    return list(session.scalars(
        select(Conversation).where(mine, spoke)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(REPLAYABLE)).all())


def not_queued(turn_id: int, reason: str) -> None:
    """A turn whose task could not be published: failed, with why."""
    store.fail(turn_id, reason)


def usage_today(session: Session, config_id: int, now: datetime | None = None
                ) -> tuple[int, float]:
    """Tokens and cost the playground spent on this config in the last 24 hours (never
    counted in its daily budget)."""
    return store.usage(session, config_id, (now or utcnow()) - timedelta(hours=24))
