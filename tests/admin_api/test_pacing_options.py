"""The backlog and pacing options through the admin API: defaults shown, values set and
changed, bad values refused with 400 and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin_api.test_admin import config_body, create_config


def test_a_new_config_shows_the_backlog_and_pacing_defaults(client, admin_headers) -> None:
    options = create_config(client, admin_headers)["options"]

    assert {name: options[name] for name in (
        "max_message_age_minutes", "stale_action", "send_rate_per_minute",
        "min_send_interval_seconds", "daily_new_conversations")} == {
        "max_message_age_minutes": 30.0, "stale_action": "ignore", "send_rate_per_minute": 30,
        "min_send_interval_seconds": 2.0, "daily_new_conversations": 50}


def test_the_backlog_and_pacing_options_are_set_and_lifted(client, admin_headers) -> None:
    created = create_config(client, admin_headers, options={
        "stale_action": "answer_latest", "send_rate_per_minute": 12,
        "min_send_interval_seconds": 0.5, "daily_new_conversations": 200,
        "max_message_age_minutes": 90})

    patched = client.patch(f"/api/workflow-configs/{created['id']}", headers=admin_headers,
                           json={"options": {"send_rate_per_minute": None,
                                             "max_message_age_minutes": None}})

    assert patched.status_code == 200, patched.get_json()
    options = patched.get_json()["options"]
    assert (options["stale_action"], options["send_rate_per_minute"],
            options["min_send_interval_seconds"], options["daily_new_conversations"],
            options["max_message_age_minutes"]) == ("answer_latest", None, 0.5, 200, None)


@pytest.mark.parametrize(("options", "message"), [
    ({"stale_action": "sometimes"}, "option 'stale_action' must be one of: ignore, handoff, "
                                    "answer_latest"),
    ({"stale_action": 1}, "option 'stale_action' has the wrong type"),
    ({"max_message_age_minutes": 0}, "option 'max_message_age_minutes' must be greater than 0, or null for no limit"),
    ({"max_message_age_minutes": "30"}, "option 'max_message_age_minutes' has the wrong type"),
    ({"send_rate_per_minute": 0}, "option 'send_rate_per_minute' must be greater than 0, or null for no limit"),
    ({"send_rate_per_minute": 2.5}, "option 'send_rate_per_minute' has the wrong type"),
    ({"send_rate_per_minute": True}, "option 'send_rate_per_minute' has the wrong type"),
    ({"min_send_interval_seconds": -1}, "option 'min_send_interval_seconds' must not be "
                                        "negative"),
    ({"min_send_interval_seconds": 7200}, "option 'min_send_interval_seconds' must be at most "
                                          "3600"),
    ({"daily_new_conversations": -5}, "option 'daily_new_conversations' must be greater than 0, or null for no limit"),
])
def test_a_bad_backlog_or_pacing_option_is_refused_with_the_reason(
        client, admin_headers, options: dict[str, Any], message: str) -> None:
    created = client.post("/api/workflow-configs", json=config_body(options=options),
                          headers=admin_headers)
    existing = create_config(client, admin_headers, instance="outra")
    patched = client.patch(f"/api/workflow-configs/{existing['id']}", json={"options": options},
                           headers=admin_headers)

    assert (created.status_code, patched.status_code) == (400, 400)
    assert created.get_json()["error"] == message
    assert patched.get_json()["error"] == message
