"""Business tool definitions and calls, without a network: validation, masking, the URL
template and the time a reply's tools share."""

from __future__ import annotations

import pytest

from zapreply import business_tools, configs
from zapreply.business_tools import Toolbox

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
        tool = {**TOOL, "url": f"{endpoint.url}/p/{{id}}?key=chave-na-url", "method": "GET"}
        box = Toolbox(business_tools.check([tool], reserved=set()), budget_seconds=5)
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


def test_a_slow_endpoint_gets_at_most_half_of_the_time_left():
    from tests.stubs import EndpointStub

    endpoint = EndpointStub().start()
    endpoint.routes["/p/1"] = (200, "tarde", 3.0)
    try:
        tool = {**TOOL, "url": f"{endpoint.url}/p/{{id}}", "timeout_seconds": 30}
        box = Toolbox(business_tools.check([tool], reserved=set()), budget_seconds=2.2)
        result, details = box.call("pedido", {"id": "1"})
    finally:
        endpoint.stop()
    assert result.startswith("error: pedido did not answer within 1")  # ~1.1 s
    assert 1000 <= details["duration_ms"] < 2000


def test_a_reply_makes_a_limited_number_of_calls():
    box = Toolbox(business_tools.check([TOOL], reserved=set()), budget_seconds=60)
    results = [box.call("pedido", {"id": ".."})[0]
               for _ in range(business_tools.MAX_CALLS_PER_REPLY + 1)]
    assert results[-2] == "error: argument 'id' is not a valid path segment"
    assert results[-1].startswith("error: no more than 20 tool calls per reply")
