"""The LLM down for good: the run fails, the customer gets the configured fallback and never a
raw error, and an operator replays the run once the LLM is back (`zapreply replay <run_id>` or
`POST /api/runs/<id>/replay`): exactly one reply more. On Redis and on RabbitMQ.

(A module of its own, after the scenarios that share one worker: this one needs a worker with
LLM_MAX_ATTEMPTS=2, and no other may take its tasks.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.faults.harness import ADMIN_TOKEN, wait_for

FALLBACK = "Desculpe, estamos com uma instabilidade. Já voltamos a falar com você."
# Words of the stand-in's error body and of litellm's exception names: none may reach a customer.
RAW_ERROR_MARKERS = ("stub failure", "server_error", "Error", "error", "500", "429", "litellm")


def test_an_llm_down_for_good_fails_the_run_sends_only_the_fallback_and_replay_answers_once(stack):
    stack.make_config(options={"fallback_text": FALLBACK})
    stack.start_worker(LLM_MAX_ATTEMPTS="2")
    stack.llm.fail_status = 500
    chats = {"5511900000011": "tem horário amanhã?", "5511900000012": "vocês aceitam pix?"}

    for chat, text in chats.items():
        assert stack.post(text, chat=chat).json()["status"] == "queued"
    stack.wait_settled(timeout=40)

    runs = stack.runs()
    assert [r.status for r in runs] == ["failed", "failed"], stack.describe()
    assert len(stack.events("run.failed")) == 2
    assert len(stack.events("llm.failed")) == 4  # LLM_MAX_ATTEMPTS per run, then no more
    assert len(stack.llm.requests) == 4
    # The customer gets the configured fallback, once, and nothing else.
    assert sorted((chat, body) for chat, replies in stack.replies_by_chat().items()
                  for _, body in replies) == sorted((chat, FALLBACK) for chat in chats)
    for request in stack.delivered():
        assert not any(marker in request["body"]["Body"] for marker in RAW_ERROR_MARKERS)

    # The LLM is back: replay one run from the command line and the other through the API.
    stack.llm.fail_status = None
    run_of = {m.content: m.reply_run_id for m in stack.messages("customer")}
    cli_run, api_run = run_of[chats["5511900000011"]], run_of[chats["5511900000012"]]
    command = subprocess.run(
        [str(Path(sys.executable).with_name("zapreply")), "replay", str(cli_run)],
        cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=60,
    )
    assert command.returncode == 0, command.stderr
    assert json.loads(command.stdout)["status"] == "queued"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = stack.http.post(f"{stack.receiver.url}/api/runs/{api_run}/replay", headers=headers)
    assert response.status_code == 202, response.text
    wait_for(lambda: len(stack.delivered()) >= 4, 30, "the replayed replies", stack.describe)
    stack.wait_settled(timeout=30)

    replies = {chat: [body for _, body in pairs] for chat, pairs in stack.replies_by_chat().items()}
    assert replies == {chat: [FALLBACK, f"Resposta: {text}"] for chat, text in chats.items()}, \
        stack.describe()
    assert len(stack.delivered()) == 4
    assert [r.status for r in stack.runs()] == ["sent", "sent"]
    assert len(stack.events("run.replayed")) == 2
    # A run that went out cannot be replayed into a second reply.
    again = stack.http.post(f"{stack.receiver.url}/api/runs/{api_run}/replay", headers=headers)
    assert again.status_code == 409
