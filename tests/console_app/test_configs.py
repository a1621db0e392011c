"""Configs in the console (admins only): create, edit with the API's validation, activate,
rotate the webhook secret."""

from __future__ import annotations

import html

from sqlalchemy import select

from tests.console_app.conftest import post_form
from tests.factories import make_config, stored_config
from tests.webhook_app.test_webhook_authentication import body_for
from tests.webhook_app.test_webhooks import JSON
from zapreply.rules import configs
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
    stored = _config().options
    page = f"/configs/{config_id}"
    form = {**FORM, "instance": "loja-teste", "base_url": wuzapi.url, "token": "",
            "debounce_seconds": "5"}
    assert post_form(admin, page, form, page=page).status_code == 303
    config = _config()
    assert config.debounce_seconds == 5 and config.send["token"] == "secret-user-token"
    assert config.options == stored  # options left alone stay as stored, no defaults added
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


def test_an_admin_rotates_the_webhook_secret_once_confirmed_and_the_old_url_is_refused(
        admin, base_env):
    from webhook_app import create_app
    from webhook_app.extension import runtime_of

    config = stored_config(make_config())
    old_path = configs.webhook_path(config)
    page = f"/configs/{config.id}/rotate-secret"
    assert f'href="{page}"' in admin.get(f"/configs/{config.id}").get_data(as_text=True)
    asked = admin.get(page).get_data(as_text=True)
    assert "stops working" in asked and 'name="confirm"' in asked
    unconfirmed = post_form(admin, page, page=page)
    assert unconfirmed.status_code == 400
    assert admin.post(page, data={"confirm": "yes"}).status_code == 400  # no CSRF token
    assert stored_config(config.id).webhook_secret == config.webhook_secret

    rotated = post_form(admin, page, {"confirm": "yes"}, page=page)
    assert rotated.status_code == 200
    new_path = configs.webhook_path(stored_config(config.id))
    assert new_path != old_path
    shown = rotated.get_data(as_text=True)
    assert new_path in shown and old_path not in shown
    assert new_path not in admin.get(page).get_data(as_text=True)  # shown by the rotation only
    with session_scope() as session:
        event = session.scalar(select(Event).where(Event.type == EventType.CONFIG_SECRET_ROTATED))
    assert event.payload == {"actor": "operator:ana", "workflow_config_id": config.id}

    receiver = create_app({**base_env, "WUZAPI_HMAC_KEY": ""})
    try:
        webhooks = receiver.test_client()
        body = body_for()
        refused = webhooks.post(old_path, data=body, headers={"Content-Type": JSON})
        assert refused.status_code == 401
        taken = webhooks.post(new_path, data=body, headers={"Content-Type": JSON})
        assert taken.get_json()["status"] == "queued"
    finally:
        runtime_of(receiver).database.dispose()


def test_an_agent_cannot_rotate_a_webhook_secret(agent):
    config = stored_config(make_config())
    response = post_form(agent, f"/configs/{config.id}/rotate-secret", {"confirm": "yes"})
    assert response.status_code == 403
    assert stored_config(config.id).webhook_secret == config.webhook_secret
