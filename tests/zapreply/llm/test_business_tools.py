"""Business tool definitions and calls: validation, masking, the URL template, the time a
reply's tools share, the arguments checked against the schema, the identity headers and the
addresses a tool may reach (against endpoint stand-ins on loopback)."""

from __future__ import annotations

import pytest

from zapreply.llm import business_tools
from zapreply.llm.business_tools import Toolbox
from zapreply.rules import configs

TOOL = {"name": "pedido", "description": "Consulta um pedido.", "url": "https://loja.example/p/{id}",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        "headers": {"Authorization": "Bearer s3cr3t"}}
BASE = {
    "name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
    "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
}


def test_a_definition_is_stored_with_its_defaults_filled():
    values = configs.validate({**BASE, "options": {"tools": [{**TOOL, "method": "patch"}]}})
    [tool] = values["options"]["tools"]
    assert tool["method"] == "PATCH" and tool["timeout_seconds"] == 10.0
    without = {k: v for k, v in TOOL.items() if k not in ("parameters", "url")}
    [plain] = business_tools.check([{**without, "url": "http://loja.example/x"}], reserved=set())
    assert plain["method"] == "POST"
    assert plain["parameters"] == {"type": "object", "properties": {}}


def test_headers_are_shown_masked_and_restored_from_the_stored_definition():
    stored = business_tools.check([TOOL], reserved=set())
    shown = business_tools.masked(stored, configs.MASK)
    assert shown[0]["headers"] == {"Authorization": configs.MASK}
    assert stored[0]["headers"] == {"Authorization": "Bearer s3cr3t"}
    back = business_tools.unmask(shown, stored, configs.MASK)
    assert back[0]["headers"] == {"Authorization": "Bearer s3cr3t"}
    with pytest.raises(ValueError, match="mask"):
        business_tools.unmask([{**shown[0], "name": "outro"}], stored, configs.MASK)


@pytest.mark.parametrize("options, message", [
    ({"tools": {"name": "pedido"}}, "wrong type"),
    ({"tools": ["pedido"]}, r"tools\[0\] must be an object"),
    ({"tools": [TOOL] * 2}, "used twice"),
    ({"tools": [{**TOOL, "name": "handoff_to_human"}]}, "built-in"),
    ({"daily_token_budget": 1.5}, "wrong type"),
    ({"daily_token_budget": -1}, "must not be negative"),
    ({"daily_cost_budget": "1"}, "wrong type"),
    ({"budget_action": "stop"}, "must be one of"),
])
def test_it_rejects_bad_tools_and_budgets(options, message):
    with pytest.raises(configs.InvalidConfig, match=message):
        configs.validate({**BASE, "options": options})


def test_the_budget_options_are_accepted():
    values = configs.validate({**BASE, "options": {
        "daily_token_budget": 100_000, "daily_cost_budget": 2.5, "budget_action": "handoff"}})
    assert values["options"]["budget_action"] == "handoff"


def test_a_path_argument_cannot_climb_out_of_its_segment():
    box = Toolbox(business_tools.check([TOOL], reserved=set()), budget_seconds=5)
    for bad in ("..", "."):
        result, details = box.call("pedido", {"id": bad})
        assert result == "error: argument 'id' is not a valid path segment"
        assert details["ok"] is False


def test_the_tools_of_one_reply_share_a_time_budget():
    box = Toolbox(business_tools.check([TOOL], reserved=set()), budget_seconds=0)
    result, details = box.call("pedido", {"id": "1"})
    assert result.startswith("error: no time left to call pedido")
    assert details["status"] is None


def test_the_time_budget_is_what_the_task_limit_leaves_after_the_llm_calls(settings):
    # 300 s task limit, 10 s per LLM call, 6 calls at most: half of the 240 s left.
    assert business_tools.time_budget(settings) == 120


def test_a_call_leaves_no_url_in_the_logs(caplog):
    from tests.stubs import EndpointStub

    endpoint = EndpointStub().start()
    try:
        tool = {**TOOL, "url": f"{endpoint.url}/p/{{id}}?key=chave-na-url", "method": "GET",
                "parameters": {"type": "object", "properties": {
                    "id": {"type": "string"}, "cpf": {"type": "string"}}}}
        box = Toolbox(business_tools.check([tool], reserved=set()), budget_seconds=5,
                      private_hosts=["127.0.0.1"])
        with caplog.at_level("DEBUG"):
            result, details = box.call("pedido", {"id": "42", "cpf": "12345678900"})
    finally:
        endpoint.stop()
    assert (result, details["status"]) == ('{"status": "enviado"}', 200)
    assert endpoint.requests[0]["query"] == {"key": ["chave-na-url"], "cpf": ["12345678900"]}
    assert endpoint.requests[0]["headers"]["Authorization"] == "Bearer s3cr3t"
    logged = caplog.text
    assert "chave-na-url" not in logged and "12345678900" not in logged
    assert "s3cr3t" not in logged


def test_a_slow_endpoint_is_cut_off_when_the_reply_s_time_runs_out():
    from tests.stubs import EndpointStub

    endpoint = EndpointStub().start()
    endpoint.routes["/p/1"] = (200, "tarde", 3.0)
    try:
        tool = {**TOOL, "url": f"{endpoint.url}/p/{{id}}", "timeout_seconds": 30}
        box = Toolbox(business_tools.check([tool], reserved=set()), budget_seconds=1.5,
                      private_hosts=["127.0.0.1"])
        result, details = box.call("pedido", {"id": "1"})
    finally:
        endpoint.stop()
    assert result.startswith("error: pedido did not answer within 1.5 s")
    assert 1400 <= details["duration_ms"] < 2200


def test_a_reply_makes_a_limited_number_of_calls():
    box = Toolbox(business_tools.check([TOOL], reserved=set()), budget_seconds=60)
    results = [box.call("pedido", {"id": ".."})[0]
               for _ in range(business_tools.MAX_CALLS_PER_REPLY + 1)]
    assert results[-2] == "error: argument 'id' is not a valid path segment"
    assert results[-1].startswith("error: no more than 20 tool calls per reply")


# Arguments: only what the schema allows is sent.


ORDER = {"name": "pedido", "description": "Consulta um pedido.", "method": "GET",
         "parameters": {"type": "object",
                        "properties": {"numero": {"type": "string"},
                                       "itens": {"type": "integer", "minimum": 1}},
                        "required": ["numero"]}}


@pytest.fixture
def endpoint():
    from tests.stubs import EndpointStub

    stub = EndpointStub().start()
    yield stub
    stub.stop()


def order_box(endpoint, **overrides) -> Toolbox:
    tool = {**ORDER, "url": f"{endpoint.url}/pedidos", **overrides}
    return Toolbox(business_tools.check([tool], reserved=set()), budget_seconds=10,
                   private_hosts=["127.0.0.1"])


@pytest.mark.parametrize("arguments, error", [
    ({"numero": "123", "admin": "true"},
     "error: unexpected argument(s) 'admin' (allowed: numero, itens); nothing was sent to pedido"),
    ({"numero": 123}, "error: invalid argument 'numero': 123 is not of type 'string'"),
    ({"numero": "1", "itens": 0}, "error: invalid argument 'itens': 0 is less than the minimum"),
    ({"itens": 2}, "error: missing argument 'numero'; nothing was sent to pedido"),
])
def test_arguments_the_schema_does_not_allow_are_refused_and_nothing_is_sent(
    endpoint, arguments, error
):
    result, details = order_box(endpoint).call("pedido", arguments)
    assert result.startswith(error)
    assert details["refused"] == "arguments" and details["ok"] is False
    assert endpoint.requests == []


def test_arguments_the_schema_allows_are_sent():
    from tests.stubs import EndpointStub

    stub = EndpointStub().start()
    try:
        result, details = order_box(stub).call("pedido", {"numero": "123", "itens": 2})
    finally:
        stub.stop()
    assert details["ok"] is True and "refused" not in details
    assert stub.requests[0]["query"] == {"numero": ["123"], "itens": ["2"]}


def test_a_schema_that_allows_more_properties_itself_is_followed(endpoint):
    box = order_box(endpoint, parameters={**ORDER["parameters"], "additionalProperties": True})
    result, details = box.call("pedido", {"numero": "1", "canal": "loja"})
    assert details["ok"] is True
    assert endpoint.requests[0]["query"] == {"numero": ["1"], "canal": ["loja"]}


def test_a_definition_whose_parameters_are_not_a_valid_schema_is_refused():
    bad = {**ORDER, "url": "https://loja.example/pedidos",
           "parameters": {"type": "object", "properties": {"numero": {"type": "texto"}}}}
    with pytest.raises(configs.InvalidConfig, match="not a valid JSON schema"):
        configs.validate({**BASE, "options": {"tools": [bad]}})


# Whose conversation a call serves.


IDENTITY = business_tools.Identity("loja-teste", 42, "5511900000001@s.whatsapp.net",
                                   "5511900000001")


def test_every_call_names_the_conversation_it_serves(endpoint):
    box = Toolbox(business_tools.check([{**ORDER, "url": f"{endpoint.url}/pedidos",
                                         "headers": {"Authorization": "Bearer k"}}],
                                       reserved=set()),
                  budget_seconds=10, identity=IDENTITY, private_hosts=["127.0.0.1"])
    box.call("pedido", {"numero": "1"})
    headers = endpoint.requests[0]["headers"]
    assert headers["X-Zapreply-Instance"] == "loja-teste"
    assert headers["X-Zapreply-Conversation-Id"] == "42"
    assert headers["X-Zapreply-Contact-Jid"] == "5511900000001@s.whatsapp.net"
    assert headers["X-Zapreply-Contact-Phone"] == "5511900000001"
    assert headers["Authorization"] == "Bearer k"


def test_a_definition_cannot_set_the_identity_headers(endpoint):
    with pytest.raises(ValueError, match="set by zapreply"):
        business_tools.check([{**ORDER, "url": "https://loja.example/p",
                               "headers": {"x-zapreply-contact-phone": "5511999999999"}}],
                             reserved=set())
    # A definition stored before that check: its header does not reach the endpoint.
    stored = {**ORDER, "url": f"{endpoint.url}/pedidos",
              "headers": {"x-zapreply-contact-phone": "5511999999999",
                          "X-Zapreply-Instance": "outra-loja"}}
    Toolbox([stored], budget_seconds=10, identity=IDENTITY,
            private_hosts=["127.0.0.1"]).call("pedido", {"numero": "1"})
    headers = {k.lower(): v for k, v in endpoint.requests[0]["headers"].items()}
    assert headers["x-zapreply-contact-phone"] == "5511900000001"
    assert headers["x-zapreply-instance"] == "loja-teste"


def test_an_instance_name_that_is_not_ascii_travels_percent_encoded():
    identity = business_tools.Identity("loja-são-paulo", 1, "x@s.whatsapp.net")
    assert identity.headers()["X-Zapreply-Instance"] == "loja-s%C3%A3o-paulo"
    assert identity.headers()["X-Zapreply-Contact-Phone"] == ""


# Where a tool may connect.


def test_a_tool_on_a_loopback_host_is_refused_unless_the_config_lists_it(endpoint):
    tool = business_tools.check([{**ORDER, "url": f"{endpoint.url}/pedidos"}], reserved=set())
    result, details = Toolbox(tool, budget_seconds=10).call("pedido", {"numero": "1"})
    assert result == ("error: pedido is not reachable: its host resolves to a private or "
                      "local address this config does not allow")
    assert details["refused"] == "private_address" and details["status"] is None
    assert endpoint.requests == []
    listed = Toolbox(tool, budget_seconds=10, private_hosts=["127.0.0.1"])
    assert listed.call("pedido", {"numero": "1"})[1]["status"] == 200


def test_a_listed_host_does_not_open_other_hosts(endpoint):
    tool = business_tools.check([{**ORDER, "url": endpoint.url.replace("127.0.0.1", "localhost")
                                  + "/pedidos"}], reserved=set())
    result, details = Toolbox(tool, budget_seconds=10, private_hosts=["127.0.0.1"]) \
        .call("pedido", {"numero": "1"})
    assert details["refused"] == "private_address"
    assert endpoint.requests == []


def test_tool_private_hosts_must_be_a_list_of_host_names():
    assert configs.validate({**BASE, "options": {"tool_private_hosts": ["erp.interno"]}})
    for bad in ("erp.interno", [""], [3]):
        with pytest.raises(configs.InvalidConfig, match="tool_private_hosts"):
            configs.validate({**BASE, "options": {"tool_private_hosts": bad}})
