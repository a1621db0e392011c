"""Tools a business defines (option `tools`), driven through the running receiver and a real
worker: the model calls the business's HTTP endpoint (a local stand-in), gets its answer back,
and the call is recorded without its credentials; a failing endpoint gives the model an error
string and the customer still a proper reply; the admin API masks the headers and refuses bad
definitions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN, fixture_json
from tests.e2e import events_of, post
from tests.factories import make_config
from tests.processes import free_port
from tests.stubs import EndpointStub
from zapreply.storage.db import session_scope
from zapreply.storage.models import Message, WorkflowConfig

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"
SECRET = "Bearer loja-chave-secreta-123"
APOLOGY = "Não consegui consultar agora, desculpe."
# The endpoint stand-in listens on loopback: a config must list it to reach it.
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
    endpoint.routes.clear()


def order_tool(url: str, **overrides) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": "consultar_pedido",
        "description": "Consulta o status de um pedido pelo número.",
        "parameters": {"type": "object", "properties": {
            "numero": {"type": "string"}, "detalhe": {"type": "string"}},
            "required": ["numero"]},
        "url": url, "method": "GET",
        "headers": {"Authorization": SECRET}, "timeout_seconds": 5,
        **overrides,
    }


def customer_says(receiver: str, text: str) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=CUSTOMER,
                                 Sender=CUSTOMER)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def tool_results_sent_to_the_model(llm) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["content"] for r in llm.requests for m in r["body"]["messages"][-1:]
            if m["role"] == "tool"]


def test_the_model_calls_the_business_endpoint_and_answers_with_its_result(
    db, receiver, wuzapi, llm, endpoint, worker_process
):
    endpoint.routes["/pedidos/A 7"] = (200, '{"status": "saiu para entrega"}', 0.0)
    make_config(wuzapi.url, options={**LOCAL, "tools": [order_tool(f"{endpoint.url}/pedidos/{{numero}}")]})

    customer_says(receiver, '#call consultar_pedido {"numero": "A 7", "detalhe": "curto"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert replies(wuzapi) == ['Resultado: {"status": "saiu para entrega"}']
    [request] = endpoint.requests
    assert request["method"] == "GET"
    assert request["raw_path"] == "/pedidos/A%207"  # filled into the path, percent-encoded
    assert request["query"] == {"detalhe": ["curto"]}
    assert request["headers"]["Authorization"] == SECRET
    offered = [t["function"]["name"] for t in llm.requests[0]["body"]["tools"]]
    assert offered == ["send_whatsapp", "handoff_to_human", "consultar_pedido"]
    assert tool_results_sent_to_the_model(llm) == ['{"status": "saiu para entrega"}']
    # The model sees what the tool is for, never where it lives or how it authenticates.
    assert SECRET not in json.dumps(llm.requests) and endpoint.url not in json.dumps(llm.requests)

    rounds = [e.payload for e in events_of("llm.completed")]
    assert [(r["round"], r["tool_calls"]) for r in rounds] == [(0, ["consultar_pedido"]), (1, [])]
    [event] = events_of("tool.called")
    assert event.payload["name"] == "consultar_pedido"
    assert event.payload["arguments"] == {"numero": "A 7", "detalhe": "curto"}
    assert event.payload["status"] == 200 and event.payload["ok"] is True
    assert event.payload["method"] == "GET"
    assert isinstance(event.payload["duration_ms"], int)
    assert event.payload["result"] == '{"status": "saiu para entrega"}'
    assert SECRET not in json.dumps(event.payload)
    assert endpoint.url not in json.dumps(event.payload)
    with session_scope() as session:
        stored = session.scalars(select(Message).where(Message.role == "tool")).one()
        assert stored.content == '{"status": "saiu para entrega"}'
    log = worker_process.log_path.read_text()
    assert SECRET not in log and "/pedidos/" not in log


def test_a_post_tool_sends_the_arguments_as_a_json_body(db, receiver, wuzapi, llm, endpoint):
    tool = order_tool(f"{endpoint.url}/reservas", name="reservar", method="post",
                      headers={"X-Api-Key": "k-123"})
    make_config(wuzapi.url, options={**LOCAL, "tools": [tool]})

    customer_says(receiver, '#call reservar {"numero": "12", "detalhe": "mesa para 2"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    [request] = endpoint.requests
    assert request["method"] == "POST" and request["path"] == "/reservas"
    assert request["body"] == {"numero": "12", "detalhe": "mesa para 2"}
    assert request["headers"]["X-Api-Key"] == "k-123"
    assert request["headers"]["Content-Type"] == "application/json"
    assert replies(wuzapi) == ['Resultado: {"status": "enviado"}']


def test_a_long_answer_reaches_the_model_cut(db, receiver, wuzapi, llm, endpoint):
    endpoint.routes["/catalogo"] = (200, "x" * 50_000, 0.0)
    make_config(wuzapi.url, options={**LOCAL, "tools": [
        order_tool(f"{endpoint.url}/catalogo", name="catalogo")]})

    customer_says(receiver, '#call catalogo {"numero": "1"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    [result] = tool_results_sent_to_the_model(llm)
    assert result == "x" * 8192 + " …[truncated]"
    assert len(events_of("tool.called")[0].payload["result"]) == 1000


@pytest.mark.parametrize("failure, expected", [
    ("500", "error: consultar_pedido answered HTTP 500: banco fora do ar"),
    ("timeout", "error: consultar_pedido did not answer within 0.5 s"),
    ("refused", "error: could not connect to consultar_pedido"),
    ("bad arguments", "error: invalid arguments"),
    ("missing path argument", "error: missing argument 'numero'"),
])
def test_a_failing_tool_gives_the_model_an_error_and_the_customer_a_reply(
    db, receiver, wuzapi, llm, endpoint, failure, expected
):
    endpoint.routes["/pedidos/9"] = (500, "banco fora do ar", 0.0)
    endpoint.routes["/lento/9"] = (200, "tarde demais", 2.0)
    base = {"500": endpoint.url, "timeout": f"{endpoint.url}/lento",
            "refused": f"http://127.0.0.1:{free_port()}"}.get(failure, endpoint.url)
    url = f"{base}/pedidos/{{numero}}" if failure != "timeout" else f"{base}/{{numero}}"
    make_config(wuzapi.url, options={**LOCAL,
        "tools": [order_tool(url, timeout_seconds=0.5)]})
    arguments = {"bad arguments": '{"numero": ', "missing path argument": '{"detalhe": "x"}'}.get(
        failure, '{"numero": "9"}')

    customer_says(receiver, f"#call consultar_pedido {arguments}")
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert replies(wuzapi) == [APOLOGY]
    [result] = tool_results_sent_to_the_model(llm)
    assert result.startswith(expected)
    assert SECRET not in result and "127.0.0.1" not in result
    [event] = events_of("tool.called")
    assert event.payload["result"].startswith(expected)
    assert event.payload.get("ok") in (False, None)
    assert SECRET not in json.dumps(event.payload)
    assert [e.payload["reason"] for e in events_of("run.failed")] == []


def test_tools_of_a_generation_that_fails_are_recorded_as_discarded(
    db, receiver, wuzapi, llm, endpoint, monkeypatch
):
    make_config(wuzapi.url, options={**LOCAL, "tools": [order_tool(f"{endpoint.url}/pedidos/{{numero}}")],
                                     "fallback_text": "Já voltamos."})
    # The LLM answers the tool call, then fails for good on the round after it.
    original = llm._handle

    def fail_after_tool(path, headers, body):  # type: ignore[no-untyped-def]
        if isinstance(body, dict) and (body.get("messages") or [{}])[-1].get("role") == "tool":
            llm.record({"path": path, "body": body, "headers": headers})
            return 401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
        return original(path, headers, body)

    monkeypatch.setattr(llm, "_handle", fail_after_tool)
    customer_says(receiver, '#call consultar_pedido {"numero": "5"}')
    wuzapi.wait_for(lambda r: len(r) >= 1)

    assert replies(wuzapi) == ["Já voltamos."]
    assert len(endpoint.requests) == 1
    [event] = events_of("tool.called")
    assert event.payload["discarded"] is True and event.payload["status"] == 200


# The admin API.


def api(receiver: str, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{receiver}/api{path}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def config_body(**options) -> dict:  # type: ignore[no-untyped-def]
    return {"name": "Loja", "instance": "loja-api", "model": "openai/stub-model",
            "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
            "options": options}


def stored_tools(config_id: int) -> list[dict]:
    with session_scope() as session:
        return session.get(WorkflowConfig, config_id).options["tools"]


def test_the_api_masks_tool_headers_and_keeps_them_when_echoed_back(db, receiver):
    created = api(receiver, "POST", "/workflow-configs",
                  config_body(tools=[order_tool("https://loja.example/pedidos/{numero}")]))
    assert created.status_code == 201, created.text
    config_id = created.json()["id"]

    shown = api(receiver, "GET", f"/workflow-configs/{config_id}")
    assert SECRET not in shown.text
    [tool] = shown.json()["options"]["tools"]
    assert tool["headers"] == {"Authorization": "********"}
    assert tool["method"] == "GET" and tool["timeout_seconds"] == 5.0

    tool["description"] = "Consulta pedidos."
    patched = api(receiver, "PATCH", f"/workflow-configs/{config_id}",
                  {"options": {"tools": [tool]}})
    assert patched.status_code == 200, patched.text
    assert SECRET not in patched.text
    [kept] = stored_tools(config_id)
    assert kept["headers"] == {"Authorization": SECRET}
    assert kept["description"] == "Consulta pedidos."

    renamed = api(receiver, "PATCH", f"/workflow-configs/{config_id}",
                  {"options": {"tools": [{**tool, "name": "outro"}]}})
    assert renamed.status_code == 400
    assert "mask" in renamed.json()["error"]
    assert stored_tools(config_id)[0]["name"] == "consultar_pedido"


@pytest.mark.parametrize("change, message", [
    ({"name": "consultar pedido"}, "letters, digits"),
    ({"name": "x" * 65}, "letters, digits"),
    ({"name": "send_whatsapp"}, "built-in"),
    ({"description": ""}, "'description'"),
    ({"parameters": {"type": "array"}}, "\"type\": \"object\""),
    ({"parameters": "numero"}, "\"type\": \"object\""),
    ({"url": "ftp://loja.example/x"}, "http(s) URL"),
    ({"url": "https://{numero}.example/x"}, "path only"),
    ({"url": "https://loja.example/{codigo}"}, "{codigo}"),
    ({"method": "FETCH"}, "'method'"),
    ({"timeout_seconds": 0}, "'timeout_seconds'"),
    ({"timeout_seconds": 600}, "'timeout_seconds'"),
    ({"headers": {"Authorization": 7}}, "single-line"),
    ({"headers": {"X-Key": "a\r\nX-Evil: 1"}}, "single-line"),
    ({"headers": {"bad header": "v"}}, "not a valid header name"),
    ({"retries": 3}, "unknown field"),
])
def test_the_api_refuses_a_bad_tool_definition(db, receiver, change, message):
    tool = {**order_tool("https://loja.example/pedidos/{numero}"), **change}
    response = api(receiver, "POST", "/workflow-configs", config_body(tools=[tool]))
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert "loja-chave" not in response.text


def test_the_api_refuses_two_tools_with_one_name_and_a_masked_header_on_create(db, receiver):
    tool = order_tool("https://loja.example/pedidos/{numero}")
    twice = api(receiver, "POST", "/workflow-configs", config_body(tools=[tool, tool]))
    assert twice.status_code == 400 and "used twice" in twice.json()["error"]
    masked = api(receiver, "POST", "/workflow-configs",
                 config_body(tools=[{**tool, "headers": {"Authorization": "********"}}]))
    assert masked.status_code == 400 and "mask" in masked.json()["error"]
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []
