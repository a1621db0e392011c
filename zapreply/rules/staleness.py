"""Backlog: a customer message WhatsApp timestamped long before it reached us (WuzAPI delivers
what queued up while it was disconnected, with the original timestamps). Answering a backlog
all at once is what gets numbers banned, so such a message is recorded and, by the config's
`stale_action`, left alone, handed to a person, or answered once per conversation.

Its age is measured when it reached the receiver, which stamps its own clock into the task
(`received_at`): a message that waited in our own queue (the workers down) was fresh when
WhatsApp delivered it, and is answered. A task without that stamp is measured by the worker's
clock. A message with no timestamp, or one that does not parse, counts as fresh: WuzAPI always
sends one, so its absence says nothing about a backlog.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from zapreply.rules.options import Options

STALE = "stale"
# More than microseconds (Go's RFC 3339 carries nanoseconds): Python reads at most six digits.
_FRACTION = re.compile(r"(\.\d{6})\d+")


def typed_at(timestamp: str | None) -> datetime | None:
    """When WhatsApp saw the message (Info.Timestamp, RFC 3339 with an offset), or None when
    it is missing, unreadable or has no offset."""
    if not timestamp:
        return None
    try:
        typed = datetime.fromisoformat(_FRACTION.sub(r"\1", timestamp.strip()))
    except ValueError:
        return None
    return typed if typed.tzinfo is not None else None


def arrived_at(received_at: float | None, now: datetime) -> datetime:
    """When the message reached the receiver (its stamp, Unix seconds), else `now`."""
    if isinstance(received_at, int | float) and not isinstance(received_at, bool):
        try:
            return datetime.fromtimestamp(received_at, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return now


def stale_since(options: Options, timestamp: str | None, received_at: float | None,
                now: datetime) -> datetime | None:
    """When the customer typed a message that was already older than
    `max_message_age_minutes` when it arrived; None for a fresh one."""
    most = options.max_message_age_minutes
    typed = typed_at(timestamp)
    if not most or typed is None:
        return None
    if arrived_at(received_at, now) - typed > timedelta(minutes=most):
        return typed
    return None
