"""Configs in the console (admins only): create, edit with the API's validation, activate."""

from __future__ import annotations

import html

from sqlalchemy import select

from tests.console_app.conftest import post_form
from tests.factories import make_config
from zapreply.rules.options import DEFINITIONS
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Event, WorkflowConfig

FORM = {"name": "Loja", "instance": "loja-nova", "model": "openai/gpt-4o-mini",
        "system_prompt": "Você é o atendente.", "debounce_seconds": "2", "is_active": "on",
        "driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "user-token-123"}


def _config() -> WorkflowConfig:
    with session_scope() as session:
        return session.scalar(select(WorkflowConfig))


def test_the_form_has_a_labelled_field_for_every_option(admin):
    page = admin.get("/configs/new").get_data(as_text=True)
    for name in DEFINITIONS:
        assert f'<label for="opt.{name}">' in page, name


def test_an_admin_creates_a_config_and_its_secrets_are_never_shown_again(admin):
    response = post_form(admin, "/configs/new", {**FORM, "opt.human_pause_minutes": "45",
                                                 "hmac_key": "k" * 40}, page="/configs/new")
    assert response.status_code == 303
    config = _config()
    assert config.send["token"] == "user-token-123" and config.hmac_key == "k" * 40
    assert config.options == {"human_pause_minutes": 45}
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "user-token-123" not in page and "k" * 40 not in page
    assert f"/webhooks/wuzapi/loja-nova/{config.webhook_secret}" in page
    with session_scope() as session:
        event = session.scalar(select(Event).where(Event.type == EventType.CONFIG_CREATED))
    assert event.payload == {"actor": "operator:ana", "workflow_config_id": config.id}


def test_a_bad_value_is_400_with_the_error_next_to_its_field_and_nothing_saved(admin):
    response = post_form(admin, "/configs/new", {**FORM, "opt.temperature": "hot"},
                         page="/configs/new")
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert 'id="opt.temperature-error"' in page and "option 'temperature'" in page
    assert 'value="Você é o atendente.' not in page  # the textarea keeps it instead
    assert "Você é o atendente." in page
    response = post_form(admin, "/configs/new", {**FORM, "base_url": "ftp://x"},
                         page="/configs/new")
    assert response.status_code == 400
    assert 'id="base_url-error"' in response.get_data(as_text=True)
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []


def test_editing_keeps_the_stored_token_when_left_blank_and_validates_like_the_api(admin, wuzapi):
    config_id = make_config(wuzapi.url)
    page = f"/configs/{config_id}"
    form = {**FORM, "instance": "loja-teste", "base_url": wuzapi.url, "token": "",
            "debounce_seconds": "5"}
    assert post_form(admin, page, form, page=page).status_code == 303
    config = _config()
    assert config.debounce_seconds == 5 and config.send["token"] == "secret-user-token"
    assert config.options == {}  # defaults left alone stay defaults
    bad = post_form(admin, page, {**form, "debounce_seconds": "600"}, page=page)
    assert bad.status_code == 400
    assert "from 0 to 60" in bad.get_data(as_text=True)
    assert _config().debounce_seconds == 5


def test_a_config_is_deactivated_and_activated_from_the_list(admin, wuzapi):
    config_id = make_config(wuzapi.url)
    post_form(admin, f"/configs/{config_id}/active", {"active": "false"}, page="/configs")
    assert _config().is_active is False
    post_form(admin, f"/configs/{config_id}/active", {"active": "true"}, page="/configs")
    assert _config().is_active is True
    assert post_form(admin, f"/configs/{config_id}/active", {"active": "maybe"},
                     page="/configs").status_code == 400


def test_an_agent_cannot_change_a_config(agent, wuzapi):
    config_id = make_config(wuzapi.url)
    response = post_form(agent, f"/configs/{config_id}/active", {"active": "false"})
    assert response.status_code == 403
    assert _config().is_active is True
