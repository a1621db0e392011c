"""Workflow config validation: every option is checked before it reaches the database."""

from __future__ import annotations

import pytest

from zapreply.rules import configs

BASE = {
    "name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
    "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
}


def test_it_accepts_the_documented_options():
    values = configs.validate({**BASE, "options": {
        "timezone": "America/Sao_Paulo", "reset_keyword": "recomeçar", "resume_keyword": "#bot",
        "session_idle_hours": 12, "max_input_chars": 2000, "rate_limit_per_minute": 20,
        "loop_guard_replies": 8, "loop_guard_minutes": 1.5, "human_pause_minutes": None,
    }})
    assert values["options"]["timezone"] == "America/Sao_Paulo"


@pytest.mark.parametrize("options, message", [
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"rate_limit_per_minute": -1}, "must not be negative"),
    ({"max_input_chars": "many"}, "wrong type"),
    ({"loop_guard_replies": True}, "wrong type"),
    ({"no_such_option": 1}, "unknown option"),
    ({"trigger": "sometimes"}, "must be one of"),
    ({"trigger_operator": "regex", "trigger_keywords": ["(unclosed"]}, "not a valid regex"),
    ({"deny_contacts": "5511900000001"}, "wrong type"),
    ({"allow_contacts": [""]}, "list of non-empty strings"),
])
def test_it_rejects_bad_options_with_a_clear_message(options, message):
    with pytest.raises(configs.InvalidConfig, match=message):
        configs.validate({**BASE, "options": options})
