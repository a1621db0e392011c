"""The dashboard's figures from seeded rows, on PostgreSQL (percentile_cont) and SQLite (the
same interpolation in Python)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests import dashboard_rows as rows
from tests.factories import make_config
from zapreply.actions import dashboard
from zapreply.actions.errors import Invalid, NotFound
from zapreply.storage.db import session_scope

NOW = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
AT_14 = datetime(2026, 12, 3, 14, 10, tzinfo=UTC)
AT_15 = datetime(2026, 12, 3, 15, 5, tzinfo=UTC)


def _seed() -> tuple[int, int]:
    loja = make_config(options={"daily_cost_budget": 0.5, "timezone": "UTC"})
    outra = make_config(name="Outra", instance="outra")
    first, second = rows.conversation(loja), rows.conversation(loja)
    for seconds in (1, 2, 3):
        rows.reply(loja, first, AT_14, seconds)
    rows.customer_message(second, AT_14 + timedelta(minutes=10))  # not answered
    for seconds in (4, 10):
        rows.reply(loja, second, AT_15, seconds)
    rows.reply(loja, first, NOW - timedelta(days=2), 5)  # outside the last 24 hours
    elsewhere = rows.conversation(outra, instance="outra")
    rows.reply(outra, elsewhere, AT_15 + timedelta(minutes=5), 100, instance="outra")
    rows.event("handoff.requested", second, AT_15 + timedelta(minutes=1), reason="pediu")
    rows.event("run.failed", first, AT_14 + timedelta(minutes=20), reason="llm")
    rows.event("run.failed", elsewhere, AT_15 + timedelta(minutes=15), reason="send")
    rows.event("llm.completed", first, AT_14, model="openai/stub-model", prompt_tokens=100,
               completion_tokens=20, cost=0.001, latency_ms=40)
    rows.event("llm.completed", second, AT_15, model="openai/stub-model", prompt_tokens=50,
               completion_tokens=10, cost=None, latency_ms=40)
    rows.event("media.transcribed", second, AT_15, model="whisper-1", cost=0.002)
    rows.event("message.sent", second, AT_15)  # not counted anywhere
    rows.daily_usage(loja, NOW.date(), 180, 0.003)
    return loja, outra


def _figures(**kwargs):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return dashboard.dashboard(session, now=NOW, **kwargs)


def test_the_last_24_hours_of_a_config_by_hour(database):
    loja, _ = _seed()
    found = _figures(unit="hour", config_id=loja)
    assert len(found.buckets) == 24
    assert found.start == datetime(2026, 12, 2, 16, tzinfo=UTC)
    assert found.end == datetime(2026, 12, 3, 16, tzinfo=UTC)
    by_hour = {b.start.hour: b for b in found.buckets}
    at_14, at_15 = by_hour[14], by_hour[15]
    assert (at_14.messages_in, at_14.replies, at_14.handoffs, at_14.failures) == (4, 3, 0, 1)
    assert at_14.p50_seconds == pytest.approx(2.0)
    assert at_14.p95_seconds == pytest.approx(2.9)
    assert (at_14.input_tokens, at_14.output_tokens) == (100, 20)
    assert at_14.cost == pytest.approx(0.001)
    assert (at_15.messages_in, at_15.replies, at_15.handoffs, at_15.failures) == (2, 2, 1, 0)
    assert at_15.p50_seconds == pytest.approx(7.0)
    assert at_15.p95_seconds == pytest.approx(9.7)
    assert (at_15.input_tokens, at_15.output_tokens) == (50, 10)
    assert at_15.cost == pytest.approx(0.002)
    quiet = by_hour[3]
    assert (quiet.messages_in, quiet.replies, quiet.p50_seconds, quiet.cost) == (0, 0, None, 0)
    totals = found.totals
    assert (totals.messages_in, totals.replies, totals.handoffs, totals.failures) == (6, 5, 1, 1)
    assert totals.p50_seconds == pytest.approx(3.0)
    assert totals.p95_seconds == pytest.approx(8.8)
    assert found.budget is not None
    assert (found.budget.cost, found.budget.spent_cost, found.budget.spent_tokens) == \
        (0.5, pytest.approx(0.003), 180)


def test_every_config_together(database):
    _seed()
    found = _figures(unit="hour")
    totals = found.totals
    assert (totals.messages_in, totals.replies, totals.handoffs, totals.failures) == (7, 6, 1, 2)
    assert totals.p50_seconds == pytest.approx(3.5)
    assert totals.p95_seconds == pytest.approx(77.5)
    assert found.budget is None and found.config is None


def test_the_last_30_days_by_day(database):
    loja, outra = _seed()
    found = _figures(unit="day", config_id=loja)
    assert len(found.buckets) == 30
    assert found.end == datetime(2026, 12, 4, tzinfo=UTC)
    by_day = {b.start.date(): b for b in found.buckets}
    today, before = by_day[NOW.date()], by_day[(NOW - timedelta(days=2)).date()]
    assert (today.messages_in, today.replies, today.failures) == (6, 5, 1)
    assert (before.messages_in, before.replies, before.p50_seconds) == (1, 1, 5.0)
    assert found.totals.replies == 6
    assert found.totals.p50_seconds == pytest.approx(3.5)
    other = _figures(unit="day", config_id=outra)
    assert (other.totals.messages_in, other.totals.replies, other.totals.failures) == (1, 1, 1)
    assert other.totals.p95_seconds == pytest.approx(100.0)
    assert other.budget is None


def test_a_bad_unit_or_an_unknown_config_is_refused(database):
    with pytest.raises(Invalid):
        _figures(unit="week")
    with pytest.raises(NotFound):
        _figures(config_id=999)


def test_conversations_are_counted_by_what_the_bot_does_with_them(database):
    loja = make_config()
    rows.conversation(loja)
    rows.conversation(loja, status="paused", paused_until=NOW - timedelta(minutes=1))
    rows.conversation(loja, status="paused", paused_until=NOW + timedelta(minutes=30))
    rows.conversation(loja, status="paused", paused_until=None)
    with session_scope() as session:
        assert dashboard.conversations_by_state(session, NOW) == {
            "bot": 2, "paused": 1, "held": 1}
