"""The pace's one statement on both databases: a slot taken once however many workers ask at
the same moment, the chat's minimum interval, the day's cap on new conversations, and why a
send waits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import INSTANCE
from zapreply.replies import pacing
from zapreply.rules.options import Options
from zapreply.storage.db import autocommit, session_scope
from zapreply.storage.models import Conversation, Message, OutboxStatus, Role

pytestmark = pytest.mark.usefixtures("database")

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


def conversation(chat: str, *, wrote: datetime | None = NOW, got: datetime | None = None) -> int:
    """A conversation whose customer last wrote at `wrote`, and got our last message at `got`."""
    with session_scope() as session:
        row = Conversation(instance=INSTANCE, chat_jid=chat, status="active", lease_token=0,
                           last_inbound_at=wrote)
        session.add(row)
        session.flush()
        if got is not None:
            session.add(Message(conversation_id=row.id, instance=INSTANCE, role=Role.ASSISTANT,
                                content="oi", status=OutboxStatus.SENT, sent_at=got))
        return row.id


def reserve(conversation_id: int, options: Options, now: datetime = NOW) -> pacing.Paced | None:
    with autocommit() as connection:
        return pacing.reserve(connection, instance=INSTANCE, conversation_id=conversation_id,
                              options=options, now=now)


def test_of_many_workers_asking_at_once_one_gets_the_slot():
    options = Options.of({"send_rate_per_minute": 1, "min_send_interval_seconds": None})
    chats = [conversation(f"55119000000{n:02d}@s.whatsapp.net") for n in range(8)]
    reserve(chats[0], options, NOW - timedelta(minutes=5))  # the instance's row exists
    outcomes: list[pacing.Paced | None] = []
    start = threading.Barrier(len(chats))

    def ask(chat: int) -> None:
        start.wait()
        outcome = reserve(chat, options)
        outcomes.append(outcome)

    threads = [threading.Thread(target=ask, args=(chat,)) for chat in chats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count(None) == 1
    waits = [o for o in outcomes if o is not None]
    assert {o.reason for o in waits} == {pacing.Reason.RATE}
    assert all(59 < o.seconds <= 60 for o in waits)
    # A minute later the next one goes.
    assert reserve(chats[1], options, NOW + timedelta(seconds=60)) is None


def test_sends_are_spaced_evenly_by_the_rate():
    options = Options.of({"send_rate_per_minute": 30, "min_send_interval_seconds": None})
    ana, bruno = conversation("5511900000001@s.whatsapp.net"), \
        conversation("5511900000002@s.whatsapp.net")

    assert reserve(ana, options) is None
    waits = reserve(bruno, options, NOW + timedelta(seconds=0.5))
    assert waits is not None and waits.reason == pacing.Reason.RATE
    assert waits.seconds == pytest.approx(1.5)
    assert reserve(bruno, options, NOW + timedelta(seconds=2)) is None


def test_a_chat_that_just_got_a_message_waits_out_the_interval():
    options = Options.of({"send_rate_per_minute": None, "min_send_interval_seconds": 3})
    ana = conversation("5511900000001@s.whatsapp.net", got=NOW - timedelta(seconds=1))
    bruno = conversation("5511900000002@s.whatsapp.net", got=NOW - timedelta(seconds=5))

    waits = reserve(ana, options)
    assert waits is not None and waits.reason == pacing.Reason.INTERVAL
    assert waits.seconds == pytest.approx(2.0)
    assert reserve(bruno, options) is None


def test_only_chats_quiet_for_24_hours_count_against_the_daily_cap():
    options = Options.of({"send_rate_per_minute": None, "min_send_interval_seconds": None,
                          "daily_new_conversations": 1, "timezone": "America/Sao_Paulo"})
    cold = [conversation(f"55119000000{n:02d}@s.whatsapp.net", wrote=NOW - timedelta(days=2))
            for n in range(2)]
    replying = conversation("5511900000099@s.whatsapp.net", wrote=NOW - timedelta(hours=1))
    opened = conversation("5511900000098@s.whatsapp.net", wrote=NOW - timedelta(days=2),
                          got=NOW - timedelta(hours=2))  # its conversation is already open

    assert reserve(cold[0], options) is None
    waits = reserve(cold[1], options)
    assert reserve(replying, options) is None
    assert reserve(opened, options) is None

    # 18:00 UTC is 15:00 in São Paulo: the next day starts in nine hours.
    assert waits == pacing.Paced(9 * 3600, pacing.Reason.DAILY_NEW_CONVERSATIONS)
    assert reserve(cold[1], options, NOW + timedelta(hours=9)) is None


def test_a_config_with_every_limit_lifted_costs_no_statement():
    lifted = Options.of({"send_rate_per_minute": None, "min_send_interval_seconds": None,
                         "daily_new_conversations": None})
    assert not pacing.is_paced(lifted)
    assert pacing.is_paced(Options())
