"""The dashboard page for admins and agents, and the console's /metrics."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests import dashboard_rows as rows
from tests.conftest import queued_tasks
from tests.factories import make_config
from zapreply.storage.models import utcnow

METRICS_TOKEN = "m" * 40


def _recent_traffic() -> int:
    config_id = make_config(options={"daily_cost_budget": 2.0})
    conversation = rows.conversation(config_id)
    now = utcnow()
    for seconds in (1.5, 2.5):
        rows.reply(config_id, conversation, now - timedelta(minutes=5), seconds)
    rows.event("handoff.requested", conversation, now, reason="pediu")
    rows.event("llm.completed", conversation, now, model="openai/stub-model",
               prompt_tokens=1200, completion_tokens=300, cost=0.25, latency_ms=40)
    return config_id


def test_an_admin_sees_traffic_reply_times_tokens_and_cost_as_charts_with_tables(admin):
    config_id = _recent_traffic()
    page = admin.get(f"/dashboard?unit=day&config={config_id}").get_data(as_text=True)
    assert page.count('<svg class="chart"') == 5
    for title in ("Messages in and replies", "Handoffs and failed runs", "Time to reply",
                  "LLM tokens", "LLM cost"):
        assert f">{title}</title>" in page
    assert 'aria-labelledby="cost-title cost-desc"' in page
    # The daily budget as a line on the cost chart, and what today spent of it.
    assert 'class="limit"' in page and "daily budget $2.00" in page
    assert "Budget spent today" in page
    # The text alternative: today's row of the traffic table.
    assert re.search(r"<th scope=\"row\">\d\d \w\w\w</th><td>2</td><td>2</td>", page)
    assert "<td>1200</td><td>300</td>" in page
    assert 'href="/dashboard" aria-current="page"' in page


def test_an_agent_sees_the_traffic_but_not_tokens_or_cost(agent):
    _recent_traffic()
    page = agent.get("/dashboard").get_data(as_text=True)
    assert page.count('<svg class="chart"') == 3
    assert "<h2 id=\"h-cost\">" not in page and "Budget spent today" not in page
    assert "LLM tokens" not in page
    assert "Tokens, LLM cost and budgets are shown to admins." in page
    assert 'href="/dashboard"' in page


def test_bad_dashboard_filters_are_400_and_an_unknown_config_404(admin):
    assert admin.get("/dashboard?unit=week").status_code == 400
    assert admin.get("/dashboard?config=abc").status_code == 400
    assert admin.get("/dashboard?config=424242").status_code == 404


def test_the_dashboard_needs_a_signed_in_operator(console):
    response = console.test_client().get("/dashboard")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.fixture
def scraped_console(db, base_env):  # type: ignore[no-untyped-def]
    from console_app import create_app

    app = create_app({**base_env, "METRICS_TOKEN": METRICS_TOKEN})
    return app.test_client()


def test_the_console_serves_conversations_by_state_and_queue_depth_to_a_bearer_token(
        scraped_console):
    config_id = make_config()
    rows.conversation(config_id)
    rows.conversation(config_id, status="paused", paused_until=None)
    queued_before = len(queued_tasks())
    response = scraped_console.get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'zapreply_conversations{state="bot"} 1.0' in text
    assert 'zapreply_conversations{state="held"} 1.0' in text
    assert 'zapreply_conversations{state="paused"} 0.0' in text
    assert f"zapreply_queue_depth {float(queued_before)}" in text


def test_the_console_metrics_refuse_a_missing_or_wrong_token(scraped_console):
    assert scraped_console.get("/metrics").status_code == 401
    wrong = scraped_console.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "zapreply_" not in wrong.get_data(as_text=True)


def test_without_a_metrics_token_the_console_has_no_metrics(admin):
    assert admin.get("/metrics").status_code == 404
