"""The SQL of the outbox: replies stored as `pending` assistant messages, then marked sent.

Three PostgreSQL fast paths sit here beside their portable references; each is one statement,
atomic by itself, so it runs in autocommit with no BEGIN and COMMIT round trips
(docs/PERFORMANCE.md). Every fast path writes nothing unless the lease token is still the one
given (docs/RELIABILITY.md):

- `fence_with_llm_events_postgresql`: the lease renewed and a draft's `llm.completed` events
  written (portable: `replies.leases.fence`, then one `events.record` per completion);
- `store_plain_reply_postgresql`: the same, plus the outbox rows of a reply that is only text
  (portable: the above, then `add`);
- `record_last_send_postgresql`: the last row of a run marked sent, its event, the run closed,
  and the lease given up when nothing else waits (portable: `mark_sent`, `events.record`,
  `runs.CLOSE_SENT_RUN`, `runs.MORE_WAITING`, `replies.leases.release_conversation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, text, update

from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, Message, OutboxStatus, Role

_messages = Message.__table__
_conversations = Conversation.__table__

_NEXT_SEQ = select(func.coalesce(func.max(_messages.c.seq) + 1, 0)).where(
    _messages.c.reply_run_id == bindparam("run_id"), _messages.c.role == Role.ASSISTANT)
_ADD = insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True)
_MARK_SENT = (
    update(_messages).where(_messages.c.id == bindparam("row_id"))
    .values(status=OutboxStatus.SENT, provider_message_id=bindparam("provider_id"),
            sent_at=bindparam("sent_at"))
)


def next_seq(connection: Connection, run_id: int) -> int:
    """Where the run's next outbox row is numbered (0 when it has none)."""
    return connection.execute(_NEXT_SEQ, {"run_id": run_id}).scalar()


def add(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert outbox rows (`messages` columns), in one statement; their ids, in order."""
    return list(connection.execute(_ADD, rows).scalars().all())


def mark_sent(connection: Connection, row_id: int, provider_id: str | None,
              sent_at: datetime) -> None:
    connection.execute(_MARK_SENT, {
        "row_id": row_id, "provider_id": provider_id, "sent_at": sent_at})


_FENCE_AND_EVENTS = """
WITH renewed AS (
    UPDATE conversations SET lease_expires_at = :expires_at, updated_at = :now
    WHERE id = :conversation_id AND lease_token = :token
    RETURNING id
), written AS (
    INSERT INTO events (type, conversation_id, run_id, payload, created_at)
    SELECT :event_type, :conversation_id, :run_id, event.payload, :now
    FROM renewed, jsonb_array_elements(:payloads) WITH ORDINALITY AS event(payload, n)
    ORDER BY event.n
)"""
_FENCE_AND_EVENTS_TYPES = (
    bindparam("payloads", type_=Event.__table__.c.payload.type),
    bindparam("now", type_=_conversations.c.updated_at.type),
    bindparam("expires_at", type_=_conversations.c.lease_expires_at.type),
)
_FENCE_WITH_EVENTS_POSTGRESQL = text(_FENCE_AND_EVENTS + """
SELECT count(*) FROM renewed
""").bindparams(*_FENCE_AND_EVENTS_TYPES)
_STORE_PLAIN_REPLY_POSTGRESQL = text(_FENCE_AND_EVENTS + """, outbox AS (
    INSERT INTO messages (conversation_id, instance, role, content, wa_message_id,
                          reply_run_id, status, seq, extra, created_at)
    SELECT :conversation_id, :instance, 'assistant', row.content, row.wa_message_id,
           :run_id, 'pending', row.seq, '{}'::jsonb, :now
    FROM renewed, jsonb_to_recordset(:rows) AS row(content text, wa_message_id text, seq int)
    ORDER BY row.seq
    RETURNING id, seq
)
SELECT (SELECT count(*) FROM renewed) AS renewed,
       ARRAY(SELECT id FROM outbox ORDER BY seq) AS ids
""").bindparams(*_FENCE_AND_EVENTS_TYPES, bindparam("rows", type_=_messages.c.extra.type))


@dataclass(frozen=True)
class Fence:
    """The lease to renew (until `expires_at`) and the `llm.completed` payloads to write."""

    conversation_id: int
    token: int
    run_id: int
    now: datetime
    expires_at: datetime
    payloads: list[dict[str, Any]]

    def params(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id, "token": self.token,
            "run_id": self.run_id, "now": self.now, "expires_at": self.expires_at,
            "event_type": EventType.LLM_COMPLETED, "payloads": self.payloads,
        }


def fence_with_llm_events_postgresql(connection: Connection, fence: Fence) -> bool:
    """Whether the lease was still ours (and so renewed and the events written)."""
    return bool(connection.execute(_FENCE_WITH_EVENTS_POSTGRESQL, fence.params()).scalar())


def store_plain_reply_postgresql(connection: Connection, fence: Fence, instance: str,
                                 rows: list[dict[str, Any]]) -> list[int] | None:
    """The outbox rows' ids (`rows`: content, wa_message_id, seq), or None if the lease was no
    longer ours (nothing written)."""
    stored = connection.execute(_STORE_PLAIN_REPLY_POSTGRESQL, {
        **fence.params(), "instance": instance, "rows": rows}).one()
    return list(stored.ids) if stored.renewed else None


# Data-modifying CTEs all see the snapshot the statement started with: the row being marked
# sent still reads `pending` there, so "anything else waiting" leaves it out.
_LAST_SEND_POSTGRESQL = text("""
WITH sent AS (
    UPDATE messages SET status = 'sent', provider_message_id = :provider_id, sent_at = :sent_at
    WHERE id = :row_id
), event AS (
    INSERT INTO events (type, conversation_id, run_id, payload, created_at)
    VALUES (:event_type, :conversation_id, :run_id, :payload, :sent_at)
), closed AS (
    UPDATE reply_runs SET status = 'sent', finished_at = :sent_at
    WHERE id = :run_id AND status = 'running'
    RETURNING id
), waiting AS (
    SELECT EXISTS (
        SELECT 1 FROM messages
        WHERE conversation_id = :conversation_id
          AND ((role = 'customer' AND reply_run_id IS NULL)
               OR (role = 'assistant' AND status = 'pending' AND id <> :row_id))
    ) AS more
), released AS (
    UPDATE conversations SET lease_owner = NULL, lease_expires_at = NULL, updated_at = :sent_at
    WHERE id = :conversation_id AND lease_token = :token
      AND EXISTS (SELECT 1 FROM closed) AND NOT (SELECT more FROM waiting)
)
SELECT EXISTS (SELECT 1 FROM closed) AS closed, (SELECT more FROM waiting) AS more
""").bindparams(
    bindparam("payload", type_=Event.__table__.c.payload.type),
    bindparam("sent_at", type_=_messages.c.sent_at.type),
)


@dataclass(frozen=True)
class LastSend:
    closed: bool  # the run was still running, and is now closed as sent
    more: bool  # something else waits in the conversation (the lease was kept)


def record_last_send_postgresql(connection: Connection, *, conversation_id: int, token: int,
                                run_id: int, row_id: int, provider_id: str | None,
                                sent_at: datetime) -> LastSend:
    outcome = connection.execute(_LAST_SEND_POSTGRESQL, {
        "row_id": row_id, "provider_id": provider_id, "sent_at": sent_at,
        "conversation_id": conversation_id, "run_id": run_id, "token": token,
        "event_type": EventType.MESSAGE_SENT,
        "payload": {"message_id": row_id, "provider_message_id": provider_id},
    }).one()
    return LastSend(bool(outcome.closed), bool(outcome.more))
