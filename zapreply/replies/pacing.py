"""Pacing what an instance sends (options `send_rate_per_minute`, `min_send_interval_seconds`,
`daily_new_conversations`): before each message, its slot is reserved in the database
(`zapreply.storage.pacing.reserve`, one statement). A message whose slot is not free yet is
not waited for in the worker: its run's `next_attempt_at` is set to when it may go, a
`message.paced` event says why and for how long, and the run gives up its lease. The planner
delivers the run's rows, still pending and in order, once that time has come, woken by the
`reply` task's countdown or, if that task is lost, the sweeper.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from zapreply.rules.budget import day_of
from zapreply.rules.options import Options
from zapreply.storage import pacing as store

# WhatsApp counts a business-initiated conversation from a message to someone who wrote
# nothing in the last 24 hours.
CONVERSATION_WINDOW = timedelta(hours=24)


class Reason(StrEnum):
    """Why a send waits (the `reason` of `message.paced`)."""

    RATE = "rate"
    INTERVAL = "interval"
    DAILY_NEW_CONVERSATIONS = "daily_new_conversations"


@dataclass(frozen=True)
class Paced:
    """A send that must wait `seconds`, and why."""

    seconds: float
    reason: Reason


def is_paced(options: Options) -> bool:
    return bool(options.send_rate_per_minute or options.min_send_interval_seconds
                or options.daily_new_conversations)


def reserve(connection: Connection, *, instance: str, conversation_id: int, options: Options,
            now: datetime) -> Paced | None:
    """Take a slot for one message to the conversation's chat now; None when it may go, else
    how long it waits and why."""
    if not is_paced(options):
        return None
    rate = options.send_rate_per_minute
    gap = timedelta(seconds=float(options.min_send_interval_seconds or 0))
    ask = store.Ask(
        instance=instance, conversation_id=conversation_id, now=now,
        spacing=60.0 / rate if rate else 0.0, gap_since=now - gap,
        window_since=now - CONVERSATION_WINDOW, day=day_of(now, options).isoformat(),
        cap=options.daily_new_conversations)
    if store.reserve(connection, ask):
        return None
    return _why(store.held(connection, instance, conversation_id), ask, gap, options)


def _why(held: store.Held, ask: store.Ask, gap: timedelta, options: Options) -> Paced:
    now = ask.now
    if held.last_sent_at is not None and held.last_sent_at + gap > now:
        return Paced((held.last_sent_at + gap - now).total_seconds(), Reason.INTERVAL)
    if held.next_send_at is not None and held.next_send_at > now.timestamp():
        return Paced(held.next_send_at - now.timestamp(), Reason.RATE)
    if held.day == ask.day and ask.cap is not None and held.new_conversations >= ask.cap:
        return Paced(_until_tomorrow(now, options), Reason.DAILY_NEW_CONVERSATIONS)
    # Freed between the two reads (another worker's clock, a new day): try again at once.
    return Paced(0.1, Reason.RATE)


def _until_tomorrow(now: datetime, options: Options) -> float:
    zone = ZoneInfo(options.timezone or "UTC")
    tomorrow = datetime.combine(day_of(now, options) + timedelta(days=1), time(), tzinfo=zone)
    return max((tomorrow.astimezone(UTC) - now).total_seconds(), 1.0)
