"""Opening hours: a weekly schedule in the config's timezone, and what the bot does outside it.

A schedule maps weekdays to ranges of wall-clock time, e.g.
``{"mon": ["09:00-12:00", "13:00-18:00"], "sat": ["22:00-02:00"]}``: a range whose end is not
after its start runs past midnight into the next day; "24:00" is the end of the day; a day left
out is closed. Outside the schedule (with `outside_hours` = "away") the customer's messages are
kept in the history without calling the model, and `away_message`, if set, is sent once per
closed window: the stretch of time since the business last closed.

Pure functions apart from `closed_for`, which asks the database whether this closed window has
already had its away message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from zapreply.storage.models import Message, Role

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# "mon" or "monday" (any case) -> 0, as datetime.weekday() counts.
_DAY_NAMES = {name: index for index, day in enumerate(_WEEKDAYS) for name in (day[:3], day)}
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY_MINUTES = 24 * 60
# The closed window is the time since the last closing; a schedule that opens at least once a
# week (validation insists) has one within eight days.
_LOOKBACK_DAYS = 8


class BadSchedule(ValueError):
    """The schedule cannot be read; the message says where (sent back as the 400)."""


@dataclass(frozen=True)
class Range:
    weekday: int  # 0 = Monday
    start: int  # minutes since midnight
    end: int  # minutes since midnight of the same day; > 1440 when it runs past midnight


def parse(schedule: Any) -> list[Range]:
    """The ranges of a schedule; BadSchedule says what is wrong with it."""
    if not isinstance(schedule, dict):
        raise BadSchedule("'opening_hours' must be an object mapping weekdays to lists of "
                          "'HH:MM-HH:MM' ranges")
    ranges: list[Range] = []
    seen: dict[int, str] = {}
    for key, value in schedule.items():
        weekday = _DAY_NAMES.get(key.strip().lower()) if isinstance(key, str) else None
        if weekday is None:
            raise BadSchedule(f"'opening_hours': unknown day {key!r} (use mon, tue, wed, thu, "
                              "fri, sat, sun)")
        if weekday in seen:
            raise BadSchedule(f"'opening_hours': {key!r} and {seen[weekday]!r} are the same day")
        seen[weekday] = key
        if not isinstance(value, list):
            raise BadSchedule(f"'opening_hours.{key}' must be a list of 'HH:MM-HH:MM' ranges "
                              "(an empty list: closed)")
        for item in value:
            ranges.append(_parse_range(key, weekday, item))
    if not ranges:
        raise BadSchedule("'opening_hours' never opens; leave it out (or null) to always "
                          "answer, or deactivate the config to stop answering")
    return ranges


def _parse_range(key: str, weekday: int, item: Any) -> Range:
    match = _RANGE.match(item) if isinstance(item, str) else None
    if match is None:
        raise BadSchedule(f"'opening_hours.{key}': {item!r} is not an 'HH:MM-HH:MM' range")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise BadSchedule(f"'opening_hours.{key}': {item!r} is not a time of day "
                          "(00:00 to 23:59, or 24:00 as an end)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise BadSchedule(f"'opening_hours.{key}': {item!r} is empty (for the whole day use "
                          "'00:00-24:00')")
    if end < start:
        end += _DAY_MINUTES  # past midnight, into the next day
    return Range(weekday, start, end)


def validate(schedule: Any) -> None:
    parse(schedule)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _intervals(ranges: list[Range], zone: ZoneInfo, around: datetime,
               days_back: int) -> list[tuple[datetime, datetime]]:
    """The schedule's open intervals (in UTC) that start on the local days from `days_back`
    days before `around` up to its own day."""
    today = around.astimezone(zone).date()
    intervals = []
    for back in range(days_back, -1, -1):
        day = today - timedelta(days=back)
        for item in ranges:
            if item.weekday == day.weekday():
                intervals.append((_at(day, item.start, zone), _at(day, item.end, zone)))
    return intervals


def _at(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """Local wall-clock time `minutes` after the midnight starting `day`, as UTC. A time that
    does not exist (skipped by a DST change) counts with the offset from before the change."""
    day = day + timedelta(days=minutes // _DAY_MINUTES)
    minutes %= _DAY_MINUTES
    local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
    # Aware datetimes sharing a tzinfo compare by wall clock, ignoring DST: compare in UTC.
    return local.astimezone(UTC)


def is_open(ranges: list[Range], zone: ZoneInfo, at: datetime) -> bool:
    # A range starting yesterday may still be running (past midnight).
    return any(start <= at < end for start, end in _intervals(ranges, zone, at, 1))


def closed_since(ranges: list[Range], zone: ZoneInfo, at: datetime) -> datetime | None:
    """When the closed window around `at` began (the last closing before it), or None when
    the schedule is open at `at`."""
    if is_open(ranges, zone, at):
        return None
    ends = [end for _start, end in _intervals(ranges, zone, at, _LOOKBACK_DAYS) if end <= at]
    if not ends:  # pragma: no cover - validation makes a schedule open at least once a week
        return at - timedelta(days=_LOOKBACK_DAYS)
    return max(ends)


@dataclass(frozen=True)
class Closed:
    since: datetime
    # The away message to send now; None when there is none, or this window already had it.
    away_text: str | None


def closed_for(session: Session, conversation_id: int, at: datetime, *,
               schedule: dict[str, Any] | None, outside_hours: str | None,
               timezone: str | None, away_message: str | None) -> Closed | None:
    """None when the config answers messages received at `at` (no schedule, inside it, or
    `outside_hours` = "answer"); else the closed window and what to send. The arguments are
    the options of the same names (`schedule`: opening_hours)."""
    if not schedule or outside_hours == "answer":
        return None
    try:
        ranges = parse(schedule)
    except BadSchedule:
        return None  # validated on the way in; a stored one that is not must not stop replies
    since = closed_since(ranges, _zone(timezone), at)
    if since is None:
        return None
    text = away_message
    if text and session.scalar(select(exists().where(
        Message.conversation_id == conversation_id,
        Message.role == Role.ASSISTANT,
        Message.extra["away"].as_boolean().is_(True),
        Message.created_at >= since,
    ))):
        text = None
    return Closed(since, text or None)
