"""The messages API failing: a transient 5xx is retried with the same message Id until it goes
through; a 4xx fails the run at once, with no retry storm. On Redis and on RabbitMQ."""

from __future__ import annotations


def test_a_send_failing_500_twice_is_retried_and_delivered_once_with_the_same_id(stack):
    stack.make_config()
    stack.worker()
    stack.wuzapi.failures.extend([500, 500])

    assert stack.post("quero fazer um pedido").json()["status"] == "queued"
    stack.wait_settled(timeout=30)

    attempts = stack.wuzapi.requests
    assert [a["status"] for a in attempts] == [500, 500, 200], stack.describe()
    # The same deterministic WhatsApp message id every time: a retry is the same message.
    assert len({a["body"]["Id"] for a in attempts}) == 1
    assert {a["body"]["Body"] for a in attempts} == {"Resposta: quero fazer um pedido"}
    stack.metric("first attempt -> delivered (s)", attempts[-1]["at"] - attempts[0]["at"])

    failed = stack.events("message.failed")
    assert [(e.payload["status"], e.payload["permanent"], e.payload["will_retry"])
            for e in failed] == [(500, False, True), (500, False, True)]
    assert len(stack.events("message.sent")) == 1
    assert stack.events("run.failed") == []
    assert [r.status for r in stack.runs()] == ["sent"]
    assert len(stack.llm.requests) == 1  # the reply was generated once, only the send repeated
    outbox = stack.messages("assistant")
    assert [(m.status, m.provider_message_id) for m in outbox] == [("sent", attempts[0]["body"]["Id"])]


def test_a_send_refused_with_400_fails_the_run_at_once_without_retrying(stack):
    stack.make_config()
    stack.worker()
    stack.wuzapi.failures.append(400)

    assert stack.post("oi, tudo bem?").json()["status"] == "queued"
    stack.wait_settled(timeout=30)

    assert [a["status"] for a in stack.wuzapi.requests] == [400], stack.describe()
    failed = stack.events("message.failed")
    assert len(failed) == 1
    assert failed[0].payload["permanent"] is True
    assert failed[0].payload["will_retry"] is False
    assert failed[0].payload["status"] == 400
    run_failed = stack.events("run.failed")
    assert len(run_failed) == 1
    assert stack.events("message.sent") == []
    assert [r.status for r in stack.runs()] == ["failed"]
    assert [m.status for m in stack.messages("assistant")] == ["failed"]
    assert len(stack.llm.requests) == 1
