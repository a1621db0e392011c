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
