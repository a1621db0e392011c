"""What counts as a backlog: WhatsApp's timestamp against when the receiver took the message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from zapreply.rules.options import Options
from zapreply.rules.staleness import stale_since, typed_at

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
THIRTY = Options.of({"max_message_age_minutes": 30})


def test_it_reads_wuzapis_rfc_3339_timestamps_with_their_offset_and_nanoseconds():
    assert typed_at("2026-03-02T09:15:42-03:00") == datetime(2026, 3, 2, 12, 15, 42, tzinfo=UTC)
    assert typed_at("2026-03-02T12:15:42.123456789Z") == datetime(
        2026, 3, 2, 12, 15, 42, 123456, tzinfo=UTC)


@pytest.mark.parametrize("raw", [None, "", "ontem", "1700000000", "2026-03-02T09:15:42"])
def test_a_missing_unreadable_or_offsetless_timestamp_is_no_time_at_all(raw):
    assert typed_at(raw) is None
    assert stale_since(THIRTY, raw, None, NOW) is None


def test_a_message_older_than_the_limit_when_the_receiver_took_it_is_stale():
    typed = NOW - timedelta(minutes=31)
    assert stale_since(THIRTY, typed.isoformat(), NOW.timestamp(), NOW) == typed
    assert stale_since(THIRTY, (NOW - timedelta(minutes=29)).isoformat(), NOW.timestamp(),
                       NOW) is None


def test_time_spent_in_our_own_queue_does_not_make_a_message_stale():
    # Fresh when the receiver took it; the worker gets to it an hour later (workers down).
    received = NOW - timedelta(hours=1)
    typed = received - timedelta(minutes=1)
    assert stale_since(THIRTY, typed.isoformat(), received.timestamp(), NOW) is None


def test_without_the_receivers_stamp_the_workers_clock_measures_it():
    typed = NOW - timedelta(minutes=45)
    assert stale_since(THIRTY, typed.isoformat(), None, NOW) == typed
    assert stale_since(THIRTY, typed.isoformat(), "not a time", NOW) == typed  # type: ignore[arg-type]


def test_a_timestamp_in_any_offset_is_compared_as_the_same_instant():
    typed = (NOW - timedelta(minutes=10)).astimezone(timezone(timedelta(hours=-3)))
    assert stale_since(THIRTY, typed.isoformat(), NOW.timestamp(), NOW) is None


def test_a_timestamp_ahead_of_our_clock_is_fresh():
    ahead = NOW + timedelta(minutes=5)
    assert stale_since(THIRTY, ahead.isoformat(), NOW.timestamp(), NOW) is None


def test_without_max_message_age_minutes_nothing_is_stale():
    old = (NOW - timedelta(days=3)).isoformat()
    assert stale_since(Options.of({"max_message_age_minutes": None}), old, None, NOW) is None
    assert stale_since(Options(), old, None, NOW) is not None  # the default: 30 minutes
