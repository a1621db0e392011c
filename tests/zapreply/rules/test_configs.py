"""Workflow config validation: every option is checked before it reaches the database."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from zapreply.rules import configs
from zapreply.rules.options import DEFAULTS
from zapreply.storage.models import WorkflowConfig

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


def test_a_configs_options_are_its_stored_values_over_the_defaults():
    config = WorkflowConfig(options={"fallback_text": "Já volto!", "human_pause_minutes": None,
                                     "retired_option": 1})

    options = configs.options_of(config)

    assert options.fallback_text == "Já volto!"
    assert options.human_pause_minutes is None  # a stored null is kept, not the default
    assert options.session_idle_hours == 24.0
    assert not hasattr(options, "retired_option")
    with pytest.raises(FrozenInstanceError):
        options.fallback_text = "outro"  # type: ignore[misc]


def test_a_configs_options_follow_an_update_of_the_row():
    config = WorkflowConfig(options={"trigger": "keyword"})
    assert configs.options_of(config) is configs.options_of(config)

    configs.apply(config, {"options": {"trigger": "all"}})

    assert configs.options_of(config).trigger == "all"


def test_the_admin_view_shows_every_option_with_its_default():
    config = WorkflowConfig(name="Loja", instance="loja", model="m", send={"driver": "wuzapi"},
                            options={"timezone": "America/Sao_Paulo"})

    shown = configs.public_view(config)["options"]

    assert shown == {**DEFAULTS, "timezone": "America/Sao_Paulo"}
