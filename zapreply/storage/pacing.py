"""The SQL of send pacing: each instance's next free send slot and its count of conversations
the bot opened today, in `send_pacing`.

`reserve` is the one statement a paced send costs: it takes the instance's slot only if the
slot is free, the chat got nothing within the minimum interval, and (for a chat that wrote
nothing in the last 24 hours) the day's count of new conversations is below the cap. It is an
upsert on the instance's row, so concurrent workers on any host serialize on that row:
PostgreSQL re-checks `ON CONFLICT … DO UPDATE … WHERE` against the row as the other
transaction left it, and SQLite writes one statement at a time. The same statement runs on
both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Float, Integer, bindparam, func, select, text

from zapreply.storage.models import Message, OutboxStatus, Role, SendPacing

_WHEN = Message.__table__.c.sent_at.type

# `excluded.new_conversations` is 1 when the chat wrote nothing and got nothing since
# `window_since` (a business-initiated conversation, in WhatsApp's terms), else 0.
_RESERVE = text("""
INSERT INTO send_pacing (instance, next_send_at, day, new_conversations)
SELECT :instance, :now + :spacing, :day, asked.cold
FROM (SELECT CASE WHEN :count_new = 1
        AND NOT EXISTS (SELECT 1 FROM conversations
                        WHERE id = :conversation_id AND last_inbound_at >= :window_since)
        AND NOT EXISTS (SELECT 1 FROM messages
                        WHERE conversation_id = :conversation_id AND role = 'assistant'
                          AND status = 'sent' AND sent_at >= :window_since)
      THEN 1 ELSE 0 END AS cold) AS asked
WHERE NOT EXISTS (SELECT 1 FROM messages
                  WHERE conversation_id = :conversation_id AND role = 'assistant'
                    AND status = 'sent' AND sent_at > :gap_since)
ON CONFLICT (instance) DO UPDATE SET
    next_send_at = excluded.next_send_at,
    day = excluded.day,
    new_conversations = excluded.new_conversations
        + CASE WHEN send_pacing.day = excluded.day THEN send_pacing.new_conversations ELSE 0 END
WHERE send_pacing.next_send_at <= :now
  AND (excluded.new_conversations = 0
       OR CASE WHEN send_pacing.day = excluded.day THEN send_pacing.new_conversations ELSE 0 END
          < :cap)
RETURNING new_conversations
""").bindparams(
    bindparam("now", type_=Float()), bindparam("spacing", type_=Float()),
    bindparam("count_new", type_=Integer()), bindparam("cap", type_=Integer()),
    bindparam("window_since", type_=_WHEN), bindparam("gap_since", type_=_WHEN),
)
_messages = Message.__table__
# max() typed as the column, so SQLite's text comes back a datetime.
_LAST_SENT = select(func.max(_messages.c.sent_at)).where(
    _messages.c.conversation_id == bindparam("conversation_id"),
    _messages.c.role == Role.ASSISTANT, _messages.c.status == OutboxStatus.SENT)
# A cap no instance reaches: the statement keeps one shape whether or not a cap is set.
NO_CAP = 2**31 - 1


@dataclass(frozen=True)
class Ask:
    """One send to reserve a slot for."""

    instance: str
    conversation_id: int
    now: datetime
    spacing: float  # seconds between two sends of the instance (0: no rate limit)
    gap_since: datetime  # the chat must have got nothing after this
    window_since: datetime  # a chat that wrote or got nothing since this is a new conversation
    day: str  # today, in the config's timezone
    cap: int | None  # new conversations per day

    def params(self) -> dict[str, object]:
        return {
            "instance": self.instance, "conversation_id": self.conversation_id,
            "now": self.now.timestamp(), "spacing": self.spacing, "day": self.day,
            "count_new": 0 if self.cap is None else 1,
            "cap": NO_CAP if self.cap is None else self.cap,
            "gap_since": self.gap_since, "window_since": self.window_since,
        }


def reserve(connection: Connection, ask: Ask) -> bool:
    """Take the instance's next send slot for this chat; whether it was free."""
    return connection.execute(_RESERVE, ask.params()).first() is not None


@dataclass(frozen=True)
class Held:
    """What held a send back, read after `reserve` refused it."""

    next_send_at: float | None  # the instance's next free slot, Unix seconds
    day: str | None
    new_conversations: int
    last_sent_at: datetime | None  # the chat's last message from us


def held(connection: Connection, instance: str, conversation_id: int) -> Held:
    row = connection.execute(
        SendPacing.__table__.select().where(SendPacing.__table__.c.instance == instance)).first()
    last = connection.execute(_LAST_SENT, {"conversation_id": conversation_id}).scalar()
    return Held(row.next_send_at if row else None, row.day if row else None,
                row.new_conversations if row else 0, last)
