"""Forged webhooks against the running receiver and worker, deployed as `.env.example` has it
(no global WUZAPI_HMAC_KEY): none is acted on, and the genuine one still is."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import queued_tasks, signed, wait_until_idle
from tests.e2e import fixture_body, fresh
from tests.factories import make_config
from tests.processes import Receiver, free_port
from zapreply.rules import configs
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, WorkflowConfig

INSTANCE_KEY = "k" * 24 + "-loja-teste-hmac-key"


@pytest.fixture(scope="module")
def exposed_receiver(migrated: str, base_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    """The receiver with no global key: only configs' own keys and secret paths authenticate."""
    env = {**os.environ, **base_env}
    env.pop("WUZAPI_HMAC_KEY")
    process = Receiver(env, free_port(), tmp_path_factory.mktemp("exposed") / "receiver.log")
    yield process.url
    process.stop()


@pytest.fixture
def stack(db, exposed_receiver, worker_process, wuzapi, llm):  # type: ignore[no-untyped-def]
    config_id = make_config(wuzapi.url, hmac_key=INSTANCE_KEY)
    make_config(wuzapi.url, instance="outra-loja", name="Outra")
    with session_scope() as session:
        path = configs.webhook_path(session.get(WorkflowConfig, config_id))
    yield exposed_receiver, path
    wait_until_idle()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=body, timeout=10,
                      headers={"Content-Type": "application/json", **(headers or {})})


def _genuine_reply_arrives(receiver: str, path: str, wuzapi) -> None:  # type: ignore[no-untyped-def]
    """A real customer's message on the secret path is still answered, and is all that is."""
    body = fresh(fixture_body("message_text.json", Chat="5511988887777@s.whatsapp.net"))
    assert _post(f"{receiver}{path}", body).json()["status"] == "queued"
    wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
    wait_until_idle()
    assert [entry["body"]["Phone"].split("@")[0] for entry in wuzapi.sent()] == ["5511988887777"]


def test_an_unsigned_message_claiming_any_number_makes_the_bot_write_to_no_one(
    stack, wuzapi, llm,
) -> None:
    receiver, path = stack
    for victim in ("5511900000001", "5521912345678", "4915112345678"):
        body = fresh(fixture_body("message_text.json", Chat=f"{victim}@s.whatsapp.net",
                                  Sender=f"{victim}@s.whatsapp.net"))
        response = _post(f"{receiver}/webhooks/wuzapi", body)
        assert response.status_code == 401
        assert queued_tasks() == []
    _genuine_reply_arrives(receiver, path, wuzapi)
    assert len(llm.chat_requests()) == 1


def test_a_forged_message_from_the_business_pauses_nothing(stack, wuzapi) -> None:
    receiver, path = stack
    body = fresh(fixture_body("message_from_me.json"))
    for url in (f"{receiver}/webhooks/wuzapi", f"{receiver}/webhooks/wuzapi/loja-teste",
                f"{receiver}/webhooks/wuzapi/loja-teste/not-the-secret"):
        assert _post(url, body).status_code == 401
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        assert session.scalar(select(func.count()).where(Conversation.status == "paused")) == 0
    _genuine_reply_arrives(receiver, path, wuzapi)


def test_instance_names_cannot_be_probed(stack) -> None:
    receiver, _ = stack
    answers = set()
    for instance in ("loja-teste", "outra-loja", "no-such-instance"):
        body = fresh(fixture_body("message_text.json"))
        for url in (f"{receiver}/webhooks/wuzapi/{instance}",
                    f"{receiver}/webhooks/wuzapi/{instance}/guess"):
            response = _post(url, body, {"x-hmac-signature": "0" * 64})
            answers.add((response.status_code, response.content))
    assert len(answers) == 1
    assert next(iter(answers))[0] == 401


def test_a_body_signed_for_one_instance_is_not_answered_at_another(stack, wuzapi) -> None:
    receiver, path = stack
    body = fresh(fixture_body("message_text.json"))
    replayed = _post(f"{receiver}/webhooks/wuzapi/outra-loja", body, signed(body, INSTANCE_KEY))
    assert replayed.status_code == 401
    assert queued_tasks() == []
    genuine = _post(f"{receiver}/webhooks/wuzapi", body, signed(body, INSTANCE_KEY))
    assert genuine.json()["status"] == "queued"
    wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
    wait_until_idle()
    with session_scope() as session:
        instances = session.scalars(select(Conversation.instance)).all()
    assert instances == ["loja-teste"]
    assert json.dumps(wuzapi.sent()).count("Resposta") == 1
