"""The LLM rate-limiting (429) for a while: the run is retried with backoff and the reply comes
once it is back. (The LLM down for good, and replay: test_unavailable_llm_and_replay.py.)
On Redis and on RabbitMQ."""

from __future__ import annotations

import time


def test_an_llm_rate_limited_for_a_while_answers_after_it_is_back(stack):
    stack.make_config()
    stack.worker()
    stack.llm.fail_status = 429

    assert stack.post("qual o preço da entrega?").json()["status"] == "queued"
    stack.llm.wait_for(lambda requests: len(requests) >= 2, timeout=30)
    assert stack.delivered() == []
    back_at = time.monotonic()
    stack.llm.fail_status = None
    stack.wait_settled(timeout=30)

    sent = stack.delivered()
    assert [r["body"]["Body"] for r in sent] == ["Resposta: qual o preço da entrega?"], stack.describe()
    stack.metric("LLM back -> reply (s)", sent[0]["at"] - back_at)
    statuses = [c["status"] for c in stack.llm.calls]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {429}, statuses
    failed = stack.events("llm.failed")
    assert len(failed) == len(statuses) - 1
    assert all(e.payload["will_retry"] and not e.payload["permanent"] for e in failed)
    assert [r.status for r in stack.runs()] == ["sent"]
    assert stack.events("run.failed") == []
