"""Deliveries repeated at once, bursts, and two messages racing a slow LLM: one reply per burst,
one responder per conversation, replies in order. On Redis and on RabbitMQ."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from tests.faults.harness import delivery

# Long enough for three deliveries to get through a busy 2-core machine's receiver.
DEBOUNCE = 3.0


def test_the_same_delivery_posted_five_times_at_once_gets_one_reply(stack):
    stack.make_config()
    stack.worker()
    body = delivery("Olá! Vocês abrem amanhã?")

    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: stack.post("", body=body), range(5)))

    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    statuses = [r.json()["status"] for r in responses]
    assert set(statuses) <= {"queued", "duplicate"} and "queued" in statuses
    waited = stack.wait_settled(timeout=30)
    stack.metric("settled after (s)", waited)

    sent = stack.delivered()
    assert [r["body"]["Body"] for r in sent] == ["Resposta: Olá! Vocês abrem amanhã?"], stack.describe()
    assert len(stack.events("message.sent")) == 1
    assert len(stack.events("message.received")) == 1
    # Every copy the receiver queued reached the worker and was recognised as a repeat.
    assert len(stack.events("message.duplicate")) == statuses.count("queued") - 1
    assert len(stack.llm.requests) == 1
    assert [r.status for r in stack.runs()] == ["sent"]


def test_a_burst_within_the_debounce_window_gets_one_reply_to_all_of_it(stack):
    stack.make_config(debounce_seconds=DEBOUNCE)
    stack.worker()
    texts = ["oi", "tudo bem?", "qual o horário?"]
    typed_at = datetime.now(UTC) - timedelta(seconds=3)
    # Typed a second apart (WhatsApp timestamps have whole seconds); WuzAPI posts each delivery
    # from its own goroutine, so they reach the receiver at once, in no particular order.
    bodies = [delivery(text, sent_at=typed_at + timedelta(seconds=index))
              for index, text in enumerate(texts)]

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda body: stack.post("", body=body), bodies))
    assert [r.json()["status"] for r in responses] == ["queued"] * 3
    assert time.monotonic() - started < DEBOUNCE, "the burst took longer than the debounce window"
    stack.wait_settled(timeout=30)

    assert len(stack.llm.requests) == 1, stack.describe()
    assert len(stack.delivered()) == 1, stack.describe()
    assert len(stack.events("message.sent")) == 1
    user_messages = [m["content"] for m in stack.llm.requests[0]["body"]["messages"]
                     if m["role"] == "user"]
    assert sorted(user_messages) == sorted(texts), user_messages
    # ... in the order the customer typed them (SPEC §6: "in the order the messages came"),
    # which only the WhatsApp timestamps tell.
    assert user_messages == texts, "the LLM saw the burst out of order"
    assert [r["body"]["Body"] for r in stack.delivered()] == [
        "Resposta: oi | tudo bem? | qual o horário?"]
    assert [r.status for r in stack.runs()] == ["sent"]


def test_two_messages_racing_a_slow_llm_never_overlap_and_are_answered_in_order(stack):
    stack.make_config(debounce_seconds=0.0)
    stack.worker()
    stack.llm.delay_seconds = 1.0

    assert stack.post("primeira pergunta").json()["status"] == "queued"
    # The second message arrives while the first is being answered (~0.3 s in).
    stack.llm.wait_for(lambda requests: len(requests) >= 1, timeout=20)
    time.sleep(0.3)
    assert stack.post("segunda pergunta").json()["status"] == "queued"
    stack.wait_settled(timeout=30)

    calls = stack.llm.calls
    assert len(calls) == 2, stack.describe()
    assert stack.llm.max_in_flight == 1
    first, second = sorted(calls, key=lambda c: c["start"])
    assert second["start"] >= first["end"], calls
    stack.metric("gap between LLM calls (s)", second["start"] - first["end"])
    assert [r["body"]["Body"] for r in stack.delivered()] == [
        "Resposta: primeira pergunta", "Resposta: segunda pergunta",
    ], stack.describe()
    assert [r.status for r in stack.runs()] == ["sent", "sent"]
    # The second run was asked after the first reply was in the history.
    history = [(m["role"], m["content"]) for m in stack.llm.requests[1]["body"]["messages"]
               if m["role"] != "system"]
    assert history == [("user", "primeira pergunta"), ("assistant", "Resposta: primeira pergunta"),
                       ("user", "segunda pergunta")]
