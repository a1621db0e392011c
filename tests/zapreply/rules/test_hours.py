"""Opening hours: reading a weekly schedule, and whether (and since when) it is closed, in the
config's timezone, across midnight and across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zapreply.rules import configs, hours
from zapreply.rules.hours import BadSchedule, Range
from zapreply.rules.options import Options

NEW_YORK = hours.ZoneInfo("America/New_York")
SAO_PAULO = hours.ZoneInfo("America/Sao_Paulo")
BASE = {
    "name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
    "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
}


def local(zone, *args: int) -> datetime:  # type: ignore[no-untyped-def]
    return datetime(*args, tzinfo=zone).astimezone(UTC)


def test_it_reads_days_by_short_or_full_name_and_ranges_past_midnight():
    ranges = hours.parse({"mon": ["09:00-12:00", " 13:30 - 18:00 "], "Saturday": ["22:00-02:00"],
                          "sun": []})
    assert ranges == [Range(0, 540, 720), Range(0, 810, 1080), Range(5, 1320, 1560)]


@pytest.mark.parametrize("schedule, message", [
    (["09:00-18:00"], "must be an object"),
    ({"segunda": ["09:00-18:00"]}, "unknown day 'segunda'"),
    ({"mon": "09:00-18:00"}, "must be a list"),
    ({"mon": ["9h-18h"]}, "not an 'HH:MM-HH:MM' range"),
    ({"mon": [900]}, "not an 'HH:MM-HH:MM' range"),
    ({"mon": ["09:00-24:30"]}, "not a time of day"),
    ({"mon": ["25:00-26:00"]}, "not a time of day"),
    ({"mon": ["09:60-10:00"]}, "not a time of day"),
    ({"mon": ["09:00-09:00"]}, "is empty"),
    ({"mon": ["09:00-18:00"], "monday": []}, "the same day"),
    ({"mon": [], "tue": []}, "never opens"),
    ({}, "never opens"),
])
def test_it_refuses_a_schedule_it_cannot_read(schedule, message):
    with pytest.raises(BadSchedule, match=message):
        hours.parse(schedule)


def test_a_range_is_open_from_its_start_up_to_but_not_at_its_end():
    ranges = hours.parse({"mon": ["09:00-18:00"]})
    # 2026-11-23 is a Monday.
    assert not hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 8, 59))
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 9, 0))
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 17, 59))
    assert not hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 18, 0))
    # The same instant is another wall-clock time elsewhere: 09:30 in UTC is 06:30 there.
    assert not hours.is_open(ranges, SAO_PAULO, datetime(2026, 11, 23, 9, 30, tzinfo=UTC))


def test_a_range_past_midnight_runs_into_the_next_day():
    ranges = hours.parse({"fri": ["22:00-02:00"]})
    # 2026-11-20 is a Friday.
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 20, 23, 0))
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 21, 1, 59))
    assert not hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 21, 2, 0))
    # Friday's range, not Saturday's: early Friday morning is closed.
    assert not hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 20, 1, 0))
    assert hours.closed_since(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 21, 9, 0)) == \
        local(SAO_PAULO, 2026, 11, 21, 2, 0)


def test_the_whole_day_is_open_from_midnight_to_24_00():
    ranges = hours.parse({"tue": ["00:00-24:00"]})
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 24, 0, 0))
    assert hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 24, 23, 59))
    assert not hours.is_open(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 25, 0, 0))


def test_a_closed_window_starts_at_the_last_closing_even_days_before():
    ranges = hours.parse({"mon": ["09:00-12:00", "13:00-18:00"], "fri": ["09:00-17:00"]})
    assert hours.closed_since(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 10, 0)) is None
    # Lunch break on Monday.
    assert hours.closed_since(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 23, 12, 30)) == \
        local(SAO_PAULO, 2026, 11, 23, 12, 0)
    # Sunday night: closed since Friday 17:00; and the whole weekend is one window.
    sunday = hours.closed_since(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 22, 23, 0))
    saturday = hours.closed_since(ranges, SAO_PAULO, local(SAO_PAULO, 2026, 11, 21, 8, 0))
    assert sunday == saturday == local(SAO_PAULO, 2026, 11, 20, 17, 0)
    # A week with a single opening: the window reaches back almost seven days.
    weekly = hours.parse({"wed": ["10:00-11:00"]})
    assert hours.closed_since(weekly, SAO_PAULO, local(SAO_PAULO, 2026, 11, 25, 9, 0)) == \
        local(SAO_PAULO, 2026, 11, 18, 11, 0)


def test_hours_follow_the_wall_clock_across_the_spring_change():
    # 2026-03-08 (a Sunday): at 02:00 New York clocks jump to 03:00 (UTC-5 becomes UTC-4).
    ranges = hours.parse({"sun": ["09:00-17:00", "00:00-03:00"]})
    assert hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 13, 0, tzinfo=UTC))  # 09:00 EDT
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 12, 59, tzinfo=UTC))
    assert hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 20, 59, tzinfo=UTC))  # 16:59 EDT
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 21, 0, tzinfo=UTC))
    # 00:00-03:00 that night lasts two real hours: 05:00 to 07:00 UTC.
    assert hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 6, 59, tzinfo=UTC))
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC))
    assert hours.closed_since(ranges, NEW_YORK, datetime(2026, 3, 8, 8, 0, tzinfo=UTC)) == \
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_hours_follow_the_wall_clock_across_the_autumn_change():
    # 2026-11-01 (a Sunday): at 02:00 New York clocks go back to 01:00 (UTC-4 becomes UTC-5).
    ranges = hours.parse({"sun": ["09:00-17:00"], "sat": ["20:00-01:30"]})
    assert hours.is_open(ranges, NEW_YORK, datetime(2026, 11, 1, 14, 0, tzinfo=UTC))  # 09:00 EST
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 11, 1, 13, 59, tzinfo=UTC))
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 11, 1, 22, 0, tzinfo=UTC))
    # Saturday's range ends at the first 01:30 (still EDT).
    assert hours.is_open(ranges, NEW_YORK, datetime(2026, 11, 1, 5, 29, tzinfo=UTC))
    assert not hours.is_open(ranges, NEW_YORK, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    assert hours.closed_since(ranges, NEW_YORK, datetime(2026, 11, 1, 12, 0, tzinfo=UTC)) == \
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_the_config_validates_the_hours_options():
    values = configs.validate({**BASE, "options": {
        "opening_hours": {"mon": ["09:00-18:00"]}, "away_message": "Voltamos às 9h.",
        "outside_hours": "answer", "timezone": "America/Sao_Paulo"}})
    assert values["options"]["opening_hours"] == {"mon": ["09:00-18:00"]}
    assert Options().opening_hours is None
    assert Options().outside_hours == "away"


@pytest.mark.parametrize("options, message", [
    ({"opening_hours": {"mon": ["9-18"]}}, "not an 'HH:MM-HH:MM' range"),
    ({"opening_hours": ["09:00-18:00"]}, "wrong type"),
    ({"opening_hours": {"xyz": []}}, "unknown day"),
    ({"away_message": 3}, "wrong type"),
    ({"outside_hours": "ignore"}, "must be one of: away, answer"),
])
def test_the_config_refuses_bad_hours_options(options, message):
    with pytest.raises(configs.InvalidConfig, match=message):
        configs.validate({**BASE, "options": options})
