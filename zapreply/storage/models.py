"""Tables. Alembic owns the schema (migrations/); these models must match it (`alembic check`)."""

from __future__ import annotations

import secrets
from array import array
from collections.abc import Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, TypedDict, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Role(StrEnum):
    """Who wrote a message (messages.role)."""

    CUSTOMER = "customer"
    # The bot's reply.
    ASSISTANT = "assistant"
    # Typed on the business's own phone.
    BUSINESS = "business"
    # A tool call of a reply and its result, kept for the history.
    TOOL = "tool"


class OutboxStatus(StrEnum):
    """An outbound message's status (messages.status): pending → sent | failed."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class RunStatus(StrEnum):
    """A reply run's status (reply_runs.status): running → sent | failed | skipped."""

    RUNNING = "running"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class ConversationStatus(StrEnum):
    """conversations.status; paused with no paused_until: until an operator resumes it."""

    ACTIVE = "active"
    PAUSED = "paused"


class MediaReference(TypedDict, total=False):
    """Where a media message's bytes are (zapreply.channel.wuzapi.media_reference) and what
    became of them (zapreply.replies.media)."""

    mimetype: str
    file_name: str
    size: int
    seconds: int
    voice: bool  # a voice note (PTT), not an audio file
    base64: str  # the inline bytes, dropped once the message is answered
    # WhatsApp's small JPEG preview of a photo or video (base64, at most a few KB), checked
    # at intake (zapreply.channel.wuzapi.jpeg_thumbnail) and kept for the console.
    thumbnail: str
    inline_dropped: int  # base64 characters WuzAPI sent that were too many to carry
    url: str  # WuzAPI's S3 delivery
    download: dict[str, Any]  # the keys WuzAPI's download endpoints take
    transcribed: bool  # content holds the transcript
    attempts: int  # failed fetches or transcriptions so far
    failed: str  # why the media was given up on


class QuotedMessage(TypedDict, total=False):
    """A quote: the WhatsApp id of the message replied to, who wrote it, its text (our copy
    when we have one, else as the quoting message carried it) and our row's id if we have it."""

    id: str | None
    sender: str | None
    text: str | None
    message_id: int | None
    role: str | None


class Reaction(TypedDict):
    emoji: str
    from_me: bool
    at: str


class MessageExtra(TypedDict, total=False):
    """Message.extra: what a message row keeps beyond its columns; every key optional."""

    # Customer and business messages.
    timestamp: str | None  # WhatsApp's, as WuzAPI sent it
    sender: str | None  # the JID that wrote it (a group member's, in a group)
    sender_name: str  # a group member's WhatsApp name
    sender_phone: str  # a group member's number
    truncated_from: int  # the length before max_input_chars cut it
    media: MediaReference
    reset: bool  # the customer's reset_keyword: later replies see nothing before it
    quoted: QuotedMessage  # the message it replies to (WhatsApp's quote)
    resume: bool  # the business's resume_keyword: a command, not words to the customer
    stale: bool  # older than max_message_age_minutes when it arrived (zapreply.rules.staleness)
    # Business messages written in the console (zapreply.actions.outreach): who, and the
    # config whose messages API sends them.
    operator: str
    workflow_config_id: int
    # Outbound messages.
    fallback: bool  # fallback_text sent instead of a reply
    away: bool  # the away message of a closed window
    # Any message of ours or the customer's: reactions to it, latest per reactor.
    reactions: list[Reaction]
    # Tool calls kept for the history.
    name: str
    arguments: Any


def extra_of(message: Any) -> MessageExtra:
    """A message's `extra` (an ORM object's or a Core row's), as the MessageExtra it holds. A
    row written before a key was named, or holding one no longer written, loads as it is:
    keys are never checked, only read by name."""
    return cast(MessageExtra, message.extra or {})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_webhook_secret() -> str:
    """The secret in a config's webhook path: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite (which stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Vector(TypeDecorator[Sequence[float]]):
    """An embedding: `real[]` on PostgreSQL (pgvector casts it to `vector`), float32 bytes on
    SQLite. Either loads ~100 times faster than the same numbers as JSON, which a search
    reads by the thousand."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(REAL()))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Sequence[float] | None, dialect: Any) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return [float(v) for v in value]
        return array("f", value).tobytes()

    def process_result_value(self, value: Any, dialect: Any) -> Sequence[float] | None:
        if value is None or dialect.name == "postgresql":
            return value
        vector = array("f")
        vector.frombytes(value)
        return vector
BigId = BigInteger().with_variant(Integer(), "sqlite")

intpk = Annotated[int, mapped_column(BigId, primary_key=True, autoincrement=True)]
created_at = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow, nullable=False)]
json_dict = Annotated[dict[str, Any], mapped_column(JSONType, default=dict, nullable=False)]


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class WorkflowConfig(Base):
    __tablename__ = "workflow_configs"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    instance: Mapped[str] = mapped_column(String(200), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    model: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    # {"driver": "wuzapi"|"livchat", "base_url": ..., "token": ...}; the token never leaves
    # through the API (see zapreply.rules.configs.public_view).
    send: Mapped[dict[str, Any]] = mapped_column(JSONType)
    debounce_seconds: Mapped[float] = mapped_column(Float, default=2.0)
    # A webhook posted to /webhooks/wuzapi/<instance>/<webhook_secret> is authentic; rotating
    # it invalidates the old path. hmac_key: WuzAPI's per-user HMAC key, when the instance
    # signs its webhooks (x-hmac-signature); never shown after it is set.
    webhook_secret: Mapped[str] = mapped_column(String(64), default=new_webhook_secret)
    hmac_key: Mapped[str | None] = mapped_column(String(200))
    # Optional behaviour knobs (temperature, fallback_text, human_pause_minutes, ...).
    options: Mapped[json_dict]
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("instance", "chat_jid", name="uq_conversations_chat"),
        # Conversations an instance opened in the last minute (new_conversations_per_minute).
        Index("ix_conversations_instance_created_at", "instance", "created_at"),
        # The console's inbox: newest activity first, keyset-paged on (updated_at, id).
        Index("ix_conversations_updated_at", "updated_at", "id"),
        Index("ix_conversations_instance_updated_at", "instance", "updated_at", "id"),
        Index("ix_conversations_config_updated_at", "workflow_config_id", "updated_at", "id"),
        Index("ix_conversations_paused", "updated_at", "id",
              postgresql_where=text("status = 'paused'"), sqlite_where=text("status = 'paused'")),
        # The inbox's search by name or number (ILIKE '%…%'): trigrams, PostgreSQL only.
        Index("ix_conversations_search", "contact_name", "contact_phone", "chat_jid",
              postgresql_using="gin",
              postgresql_ops={"contact_name": "gin_trgm_ops", "contact_phone": "gin_trgm_ops",
                              "chat_jid": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
    )

    id: Mapped[intpk]
    instance: Mapped[str] = mapped_column(String(200))
    chat_jid: Mapped[str] = mapped_column(String(200))
    contact_phone: Mapped[str | None] = mapped_column(String(64))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    workflow_config_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="SET NULL")
    )
    # A ConversationStatus.
    status: Mapped[str] = mapped_column(String(20), default=ConversationStatus.ACTIVE)
    paused_until: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(String(200))
    # The responder lease. lease_token only ever grows: a holder fences each write with the
    # token it got, so a holder whose lease expired and was taken over cannot write or send.
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]
    # What the model remembered about the customer (its `remember` tool) or an operator wrote:
    # one fact a line, shown to the model as data when the config has contact_memory.
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContactAddress(Base):
    """The two JIDs WhatsApp knows one person by on an instance: the LID (`…@lid`) and the
    phone's (`…@s.whatsapp.net`), as a message carrying both told (zapreply.storage.contacts)."""

    __tablename__ = "contact_addresses"
    __table_args__ = (
        UniqueConstraint("instance", "lid_jid", name="uq_contact_addresses_lid"),
        UniqueConstraint("instance", "phone_jid", name="uq_contact_addresses_phone"),
    )

    id: Mapped[intpk]
    instance: Mapped[str] = mapped_column(String(200))
    lid_jid: Mapped[str] = mapped_column(String(200))
    phone_jid: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[created_at]


class ReplyRun(Base):
    """One attempt at answering a burst of inbound messages."""

    __tablename__ = "reply_runs"
    __table_args__ = (
        Index("ix_reply_runs_conversation_status", "conversation_id", "status"),
        Index("ix_reply_runs_created_at", "created_at"),
        # The console's runs page: failed and retrying runs, newest first.
        Index("ix_reply_runs_status_id", "status", "id"),
        # A conversation's latest run.
        Index("ix_reply_runs_conversation_id", "conversation_id", "id"),
    )

    id: Mapped[intpk]
    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    workflow_config_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="SET NULL")
    )
    # A RunStatus.
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.RUNNING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Backoff after a failed attempt survives the task that scheduled it: no one resumes the
    # run before this (see zapreply.replies.sweeper).
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    finished_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Inbound dedupe: WuzAPI may deliver the same message several times, concurrently.
        UniqueConstraint("instance", "wa_message_id", name="uq_messages_wa_id"),
        Index("ix_messages_conversation_id", "conversation_id", "id"),
        Index("ix_messages_reply_run_id", "reply_run_id"),
        Index("ix_messages_created_at", "created_at"),
        Index(
            "ix_messages_unanswered", "conversation_id",
            postgresql_where=text("role = 'customer' AND reply_run_id IS NULL"),
            sqlite_where=text("role = 'customer' AND reply_run_id IS NULL"),
        ),
        # The inbox's search by text (ILIKE '%…%'): trigrams, PostgreSQL only.
        Index("ix_messages_search", "content", postgresql_using="gin",
              postgresql_ops={"content": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
    )

    id: Mapped[intpk]
    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    instance: Mapped[str] = mapped_column(String(200))
    # A Role.
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text, default="")
    wa_message_id: Mapped[str | None] = mapped_column(String(128))
    media_type: Mapped[str | None] = mapped_column(String(40))
    # For customer messages: the run that answered them (NULL = not answered yet).
    # For assistant messages: the run that produced them.
    reply_run_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("reply_runs.id", ondelete="SET NULL")
    )
    # Outbound only: an OutboxStatus; the position within its run.
    status: Mapped[str | None] = mapped_column(String(20))
    seq: Mapped[int | None] = mapped_column(Integer)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    extra: Mapped[MessageExtra] = mapped_column(JSONType, default=dict, nullable=False)
    sent_at: Mapped[datetime | None]
    created_at: Mapped[created_at]


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_conversation_id", "conversation_id", "id"),
        Index("ix_events_type", "type", "id"),
        Index("ix_events_created_at", "created_at"),
        # A transcript's runs' events.
        Index("ix_events_run_id", "run_id", "id", postgresql_where=text("run_id IS NOT NULL"),
              sqlite_where=text("run_id IS NOT NULL")),
    )

    id: Mapped[intpk]
    type: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    run_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("reply_runs.id", ondelete="SET NULL")
    )
    payload: Mapped[json_dict]
    created_at: Mapped[created_at]


class DailyUsage(Base):
    """LLM tokens and cost a config spent on one day (in its timezone): what its daily budget
    is checked against (zapreply.rules.budget). Kept only for configs that have a budget."""

    __tablename__ = "daily_usage"

    workflow_config_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False,
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    # When the budget.exceeded event of that day was written (once per config and day).
    exceeded_at: Mapped[datetime | None]


class OperatorRole(StrEnum):
    """What a console operator may do (operators.role)."""

    # Everything: conversations, runs, configs.
    ADMIN = "admin"
    # Conversations and runs only.
    AGENT = "agent"


class Operator(Base):
    """A person who signs in to the console. Disabled, never deleted: events name them."""

    __tablename__ = "operators"
    __table_args__ = (UniqueConstraint("username", name="uq_operators_username"),)

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(64))
    # werkzeug.security's scrypt hash; the password itself is never stored.
    password_hash: Mapped[str] = mapped_column(String(255))
    # An OperatorRole.
    role: Mapped[str] = mapped_column(String(10))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SignInFailure(Base):
    """A refused sign-in, counted per username and per address to throttle guessing."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (
        Index("ix_sign_in_failures_username", "username", "created_at"),
        Index("ix_sign_in_failures_remote_addr", "remote_addr", "created_at"),
    )

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(64))
    remote_addr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created_at]


class KnowledgeDocument(Base):
    """A document of a config's knowledge base, as text (zapreply.actions.knowledge); searched
    through its passages."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (Index("ix_knowledge_documents_config", "workflow_config_id", "id"),
                      Index("ix_knowledge_documents_next_fetch_at", "next_fetch_at"))

    id: Mapped[intpk]
    workflow_config_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    # What it was read from: text, markdown, pdf, csv, html.
    kind: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # A document read from a URL (zapreply.replies.knowledge_urls): fetched by a worker when
    # next_fetch_at has come, every refresh_hours (None: once). Until its first fetch its
    # content is empty; a failed fetch keeps the content it had and says why in fetch_error.
    source_url: Mapped[str | None] = mapped_column(String(2000))
    refresh_hours: Mapped[int | None] = mapped_column(Integer)
    fetched_at: Mapped[datetime | None]
    next_fetch_at: Mapped[datetime | None]
    fetch_error: Mapped[str | None] = mapped_column(String(300))
    # The text's digest: a fetch that reads the same text re-indexes nothing.
    content_sha256: Mapped[str | None] = mapped_column(String(64))


class KnowledgePassage(Base):
    """A piece of a document, the unit the model gets back from a search. Indexed for
    full-text search: on PostgreSQL in search_vector (a tsvector in `language`, a text search
    configuration), on SQLite in the FTS5 table knowledge_passages_fts (migrations only: a
    virtual table SQLAlchemy does not describe)."""

    __tablename__ = "knowledge_passages"
    __table_args__ = (
        Index("ix_knowledge_passages_config", "workflow_config_id", "id"),
        Index("ix_knowledge_passages_document", "document_id", "position"),
        Index("ix_knowledge_passages_search", "search_vector",
              postgresql_using="gin").ddl_if(dialect="postgresql"),
    )

    id: Mapped[intpk]
    document_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("knowledge_documents.id", ondelete="CASCADE"))
    workflow_config_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(40))
    search_vector: Mapped[Any] = mapped_column(TSVECTOR().with_variant(Text(), "sqlite"),
                                               nullable=True)
    # The passage's embedding by embedding_model, filled by the worker.
    embedding: Mapped[Sequence[float] | None] = mapped_column(Vector())
    embedding_model: Mapped[str | None] = mapped_column(String(200))


class KnowledgeFaq(Base):
    """A curated question and its approved answer, searched before the passages."""

    __tablename__ = "knowledge_faq"
    __table_args__ = (Index("ix_knowledge_faq_config", "workflow_config_id", "id"),)

    id: Mapped[intpk]
    workflow_config_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlaygroundStatus(StrEnum):
    """A playground turn's status (playground_turns.status): queued → running → done | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class PlaygroundKind(StrEnum):
    # A message typed in the playground's chat.
    CHAT = "chat"
    # A past conversation's last customer turn answered again.
    REPLAY = "replay"


class PlaygroundTurn(Base):
    """One message an operator tried against a config in the console's playground, and the
    bot's answer as it streamed in (zapreply.replies.playground). Never a conversation, a run
    or a budget's usage: nothing here reaches WhatsApp, the inbox, exports or dashboards."""

    __tablename__ = "playground_turns"
    __table_args__ = (
        Index("ix_playground_turns_config_chat", "workflow_config_id", "chat", "id"),
        Index("ix_playground_turns_replayed_conversation", "replayed_conversation_id"),
    )

    id: Mapped[intpk]
    workflow_config_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workflow_configs.id", ondelete="CASCADE"))
    # The chat it belongs to: its earlier turns are its history.
    chat: Mapped[str] = mapped_column(String(32))
    # A PlaygroundKind.
    kind: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    customer_text: Mapped[str] = mapped_column(Text)
    # Business tools not called: a canned result goes back to the model.
    dry_run: Mapped[bool] = mapped_column(Boolean)
    # Edits not saved yet, tried instead of the stored config's: system_prompt, model.
    overrides: Mapped[json_dict]
    replayed_conversation_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE"))
    replayed_message_id: Mapped[int | None] = mapped_column(BigId)
    # What the customer was sent back then (a replay).
    old_answer: Mapped[str | None] = mapped_column(Text)
    # A PlaygroundStatus.
    status: Mapped[str] = mapped_column(String(20), default=PlaygroundStatus.QUEUED)
    # The model's text as it arrives, every round's; `answer` is what a customer would get.
    streamed: Mapped[str] = mapped_column(Text, default="")
    answer: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

class SendPacing(Base):
    """One instance's pace of sending (zapreply.storage.pacing): the earliest time, in Unix
    seconds, its next message may go out, and how many conversations the bot opened on `day`
    (an ISO date in the config's timezone)."""

    __tablename__ = "send_pacing"

    instance: Mapped[str] = mapped_column(String(200), primary_key=True)
    next_send_at: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))
    new_conversations: Mapped[int] = mapped_column(Integer)
