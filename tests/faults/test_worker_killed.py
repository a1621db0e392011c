"""`kill -9` of the worker while the LLM call is in flight: a new worker answers, exactly once.

The killed worker held the conversation's lease and an open run. Its lease expires LEASE_SECONDS
after the last renewal; a sweeper (every SWEEP_INTERVAL_SECONDS, for work older than
SWEEP_GRACE_SECONDS) in the new worker re-enqueues the conversation, which resumes the run.

The task the killed worker was running comes back from the broker too: RabbitMQ requeues it as
soon as the connection drops; Redis only once it has been unacknowledged for
VISIBILITY_TIMEOUT_SECONDS (18 s here) and a worker's periodic restore has run. That redelivered copy must find
nothing left to do.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.harness import FAULT_ENV, wait_for

# From the kill to the reply reaching WuzAPI. Expected: lease expiry (≤ LEASE_SECONDS) and the
# new worker's start (~5 s, in parallel), a sweep (≤ 1 s) and one LLM call: ~6–10 s here.
RECOVERY_BOUND_SECONDS = 30.0
VISIBILITY = float(FAULT_ENV["VISIBILITY_TIMEOUT_SECONDS"])
# kombu's Redis transport looks for expired unacknowledged tasks every
# unacked_restore_interval (10 s by default) when the throttle is 1.
REDELIVERY_BOUND_SECONDS = VISIBILITY + 2 * 10.0


@pytest.mark.timeout(150)
def test_a_worker_killed_mid_llm_call_is_replaced_and_the_message_answered_once(stack):
    stack.make_config()
    first = stack.start_worker()
    stack.llm.delay_seconds = 8.0

    assert stack.post("vocês entregam hoje?").json()["status"] == "queued"
    stack.llm.wait_for(lambda requests: len(requests) >= 1, timeout=30)
    assert stack.open_work()["running"] == 1  # the run is open, the LLM is thinking

    killed_at = time.monotonic()
    first.kill9()
    stack.llm.delay_seconds = 0.0
    second = stack.start_worker()
    stack.metric("new worker ready after (s)", second.ready_after)

    sent = wait_for(stack.delivered, RECOVERY_BOUND_SECONDS + 20, "the reply after the kill",
                    stack.describe)
    recovery = sent[0]["at"] - killed_at
    stack.metric("kill -> reply (s)", recovery)
    assert recovery <= RECOVERY_BOUND_SECONDS, f"recovered in {recovery:.1f}s"

    # Wait until the broker has nothing left (on Redis that includes the killed worker's task
    # coming back after the visibility timeout) and every run is final.
    try:
        stack.wait_settled(timeout=max(REDELIVERY_BOUND_SECONDS - (time.monotonic() - killed_at),
                                       10))
    except AssertionError as exc:
        if stack.broker.kind == "redis" and not any(stack.open_work().values()):
            pytest.fail(
                f"The reply went out once, but Redis did not hand the killed worker's task out "
                f"again within {REDELIVERY_BOUND_SECONDS:.0f}s of the kill (visibility timeout "
                f"{VISIBILITY:.0f}s): kombu looks for expired unacknowledged tasks only every "
                "unacked_restore_interval × unacked_restore_throttle seconds (10 × 10 by "
                "default), and zapreply/broker/queue.py celery_config() sets neither in "
                f"broker_transport_options.\n{exc}", pytrace=False)
        raise
    stack.metric("kill -> everything settled (s)", time.monotonic() - killed_at)

    assert [r["body"]["Body"] for r in stack.delivered()] == ["Resposta: vocês entregam hoje?"], \
        stack.describe()
    assert len(stack.events("message.sent")) == 1
    # The killed attempt's run was resumed, not duplicated.
    assert [r.status for r in stack.runs()] == ["sent"]
    assert len(stack.llm.requests) == 2  # the killed call and the one that answered


@pytest.mark.timeout(150)
def test_a_worker_frozen_with_a_task_it_fetched_then_killed_loses_nothing(stack):
    """The narrowest window: the broker has given the worker a task (Redis: its fetch moved the
    task into the worker's inflight list; RabbitMQ: delivered, unacknowledged) and the worker
    dies before it has done anything with it. SIGSTOP holds the worker right there."""
    stack.make_config()
    victim = stack.start_worker()
    for attempt in range(5):
        os.kill(victim.pid, signal.SIGSTOP)
        text = f"alguém aí? {attempt}"
        assert stack.post(text, chat=f"55119777000{attempt:02d}").json()["status"] == "queued"
        # An idle worker always has a fetch waiting at the broker (Redis: a 1 s BLMOVE, sent
        # again as soon as one times out), so the frozen worker's fetch takes the task, unless
        # it had just timed out: then let the worker answer and freeze it again.
        deadline = time.monotonic() + 3
        while stack.broker.depth() != (0, 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        if stack.broker.depth() == (0, 1):
            break
        os.kill(victim.pid, signal.SIGCONT)
        wait_for(lambda text=text: any(r["body"]["Body"] == f"Resposta: {text}"
                                       for r in stack.delivered()),
                 30, "the reply of a task the worker took after it woke up", stack.describe)
    else:
        pytest.fail(f"the frozen worker's fetch never took the task:\n{stack.describe()}")
    if stack.broker.kind == "redis":
        assert stack.broker.inflight() == 1  # taken from the queue, recorded nowhere else yet

    killed_at = time.monotonic()
    victim.kill9()
    replacement = stack.start_worker()
    stack.metric("new worker ready after (s)", replacement.ready_after)
    wait_for(lambda: any(r["body"]["Body"] == f"Resposta: {text}" for r in stack.delivered()),
             RECOVERY_BOUND_SECONDS + 20, "the reply of the task the killed worker fetched",
             stack.describe)
    reply_at = next(r["at"] for r in stack.delivered() if r["body"]["Body"] == f"Resposta: {text}")
    stack.metric("kill -> reply (s)", reply_at - killed_at)
    assert reply_at - killed_at <= RECOVERY_BOUND_SECONDS

    stack.wait_settled(timeout=REDELIVERY_BOUND_SECONDS)
    bodies = [r["body"]["Body"] for r in stack.delivered()]
    assert len(bodies) == len(set(bodies)) == attempt + 1, stack.describe()
