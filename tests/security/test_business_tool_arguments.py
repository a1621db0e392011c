"""What the model can make a business tool do, tried against the running receiver and a real
worker: arguments beyond the tool's schema, arguments of the wrong type, headers naming another
customer, and tools whose host is on the worker's own network."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.conftest import fixture_json
from tests.e2e import events_of, post
from tests.factories import make_config
from tests.stubs import EndpointStub
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"
APOLOGY = "Não consegui consultar agora, desculpe."
LOCAL = {"tool_private_hosts": ["127.0.0.1"]}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointStub]:
    stub = EndpointStub().start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def fresh_endpoint(endpoint: EndpointStub) -> None:
    with endpoint.changed:
        endpoint.requests.clear()


def order_tool(url: str, **overrides) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": "consultar_pedido", "description": "Consulta o status de um pedido.",
        "parameters": {"type": "object", "properties": {"numero": {"type": "string"}},
                       "required": ["numero"]},
        "url": url, "method": "GET", "headers": {"Authorization": "Bearer k"},
        "timeout_seconds": 5, **overrides,
    }


def customer_says(receiver: str, text: str) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=CUSTOMER,
                                 Sender=CUSTOMER)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def tool_results(llm) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["content"] for r in llm.requests for m in r["body"]["messages"][-1:]
            if m["role"] == "tool"]


@pytest.mark.parametrize("arguments, error", [
    ('{"numero": "123", "admin": "true"}',
     "error: unexpected argument(s) 'admin' (allowed: numero); nothing was sent"),
    ('{"numero": {"$ne": null}}', "error: invalid argument 'numero': {'$ne': None} is not of "
                                  "type 'string'"),
    ('{"admin": "true"}', "error: missing argument 'numero'"),
])
def test_a_tool_call_with_arguments_beyond_its_schema_is_refused_and_nothing_is_sent(
    db, receiver, wuzapi, llm, endpoint, arguments, error
):
    make_config(wuzapi.url, options={**LOCAL, "tools": [order_tool(f"{endpoint.url}/pedidos")]})

    customer_says(receiver, f"#call consultar_pedido {arguments}")
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert endpoint.requests == []
    [result] = tool_results(llm)
    assert result.startswith(error), result
    assert [r["body"]["Body"] for r in wuzapi.sent()] == [APOLOGY]
    [event] = events_of("tool.called")
    assert event.payload["refused"] == "arguments" and event.payload["status"] is None
    assert event.payload["arguments"] == json.loads(arguments)


def test_a_tool_call_names_the_conversation_and_a_definition_cannot_name_another(
    db, receiver, wuzapi, llm, endpoint
):
    # Stored as an older row could be, without the check that refuses these headers now.
    impostor = {"X-Zapreply-Contact-Phone": "5511999999999",
                "x-zapreply-instance": "outra-loja", "Authorization": "Bearer k"}
    make_config(wuzapi.url, options={**LOCAL, "tools": [
        order_tool(f"{endpoint.url}/pedidos", headers=impostor)]})

    customer_says(receiver, '#call consultar_pedido {"numero": "A7"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    with session_scope() as session:
        conversation = session.scalars(select(Conversation)).one()
    [request] = endpoint.requests
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["x-zapreply-instance"] == "loja-teste"
    assert headers["x-zapreply-conversation-id"] == str(conversation.id)
    assert headers["x-zapreply-contact-jid"] == CUSTOMER
    assert headers["x-zapreply-contact-phone"] == "5511900000001"
    assert headers["authorization"] == "Bearer k"
    assert request["query"] == {"numero": ["A7"]}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_tool_on_the_worker_s_own_network_is_refused_unless_the_config_lists_its_host(
    db, receiver, wuzapi, llm, endpoint, host
):
    # 127.0.0.1 is listed by no config here; localhost resolves to it when connecting.
    url = endpoint.url.replace("127.0.0.1", host)
    make_config(wuzapi.url, options={"tool_private_hosts": ["erp.interno"],
                                     "tools": [order_tool(f"{url}/pedidos")]})

    customer_says(receiver, '#call consultar_pedido {"numero": "1"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert endpoint.requests == []
    [result] = tool_results(llm)
    assert result == ("error: consultar_pedido is not reachable: its host resolves to a "
                      "private or local address this config does not allow")
    [event] = events_of("tool.called")
    assert event.payload["refused"] == "private_address" and event.payload["ok"] is False
    assert str(endpoint.url) not in json.dumps(event.payload)
