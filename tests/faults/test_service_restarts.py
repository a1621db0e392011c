"""The broker or the database restarted while tasks are queued and running: every message the
receiver acknowledged is answered, once. Deliveries made while a service is down are refused
(503), so WuzAPI retries them; they are answered once accepted.

The services restarted here are the session's private ones (tests/faults/services.py): a Redis
with an append-only file (queued tasks survive), a RabbitMQ node of its own (durable queue,
persistent messages) and a PostgreSQL cluster of its own.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import delivery, wait_for

CHATS = {f"55119000002{i:02d}": f"pergunta número {i}" for i in range(6)}
BEFORE, DURING, AFTER = list(CHATS)[:4], list(CHATS)[4], list(CHATS)[5]


def _load_then(stack, restart, *, down_seconds: float) -> dict[str, float]:
    """Post four messages (two running, two queued behind them), restart a service while the
    LLM calls are in flight, post one while it is down (retried like WuzAPI until accepted)
    and one after; return timings."""
    stack.make_config()
    stack.start_worker(WORKER_CONCURRENCY="2")
    stack.llm.delay_seconds = 1.0
    for chat in BEFORE:
        assert stack.post(CHATS[chat], chat=chat).json()["status"] == "queued"
    stack.llm.wait_for(lambda requests: len(requests) >= 1, timeout=30)

    body = delivery(CHATS[DURING], chat=DURING)  # WuzAPI retries the very same delivery
    went_down = time.monotonic()
    first = restart(lambda: stack.post("", body=body), down_seconds)
    back = time.monotonic()
    statuses = [first.status_code]
    if first.status_code != 200:
        statuses += stack.post_until_queued(body)
    assert stack.post(CHATS[AFTER], chat=AFTER).json()["status"] == "queued"

    # Expected within ~10 s of the service coming back (the worker retries its broker
    # connection after 2, 4, 6 … s).
    wait_for(lambda: len(stack.replies_by_chat()) == len(CHATS), 45,
             "a reply in every conversation", stack.describe, interval=0.2)
    answered = time.monotonic()
    stack.wait_settled(timeout=60)

    replies = stack.replies_by_chat()
    assert replies.keys() == CHATS.keys(), stack.describe()
    for chat, text in CHATS.items():
        assert [body for _, body in replies[chat]] == [f"Resposta: {text}"], stack.describe()
    assert len(stack.events("message.sent")) == len(CHATS)
    assert len(stack.events("message.received")) == len(CHATS)
    assert [r.status for r in stack.runs()] == ["sent"] * len(CHATS)
    # The delivery made while the service was down was refused, not acknowledged and lost.
    assert statuses[0] == 503, statuses
    return {"down (s)": back - went_down, "back -> all answered (s)": answered - back,
            "repeated sends (same Id)": len(stack.delivered()) - len(CHATS)}


@pytest.mark.timeout(200)
def test_a_broker_restart_with_tasks_queued_and_running_loses_nothing(stack):
    broker = stack.broker

    def restart(post, down_seconds):  # type: ignore[no-untyped-def]
        broker.stop()
        first = post()
        time.sleep(down_seconds)
        broker.start()
        return first

    timings = _load_then(stack, restart, down_seconds=1.0)
    for name, value in timings.items():
        stack.metric(f"broker restart: {name}", value)


@pytest.mark.timeout(200)
def test_a_database_restart_mid_run_loses_nothing(stack):
    pg = stack.pg

    def restart(post, down_seconds):  # type: ignore[no-untyped-def]
        pg.stop("fast")
        first = post()
        time.sleep(down_seconds)
        pg.start()
        return first

    timings = _load_then(stack, restart, down_seconds=2.0)
    for name, value in timings.items():
        stack.metric(f"database restart: {name}", value)
