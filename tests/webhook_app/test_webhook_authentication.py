"""Which webhooks are acted on: signed with the global or the instance's own HMAC key, or
posted to a config's secret path; everything else is the same 401 and enqueues nothing."""

from __future__ import annotations

import json

import pytest

from tests.conftest import queued_tasks, signed
from tests.factories import make_config, stored_config
from tests.webhook_app.test_webhooks import (
    INSTANCE,
    JSON,
    clients_with_settings,
    compact,
    load_envelope,
    queued_messages,
)
from webhook_app.routing import Routes
from zapreply.rules import configs
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig

client_with = pytest.fixture(name="client_with")(clients_with_settings)

KEY_A = "a" * 16 + "-instance-key-of-loja-teste"
KEY_B = "b" * 16 + "-instance-key-of-outra-loja"


@pytest.fixture
def no_global_key(client_with):  # type: ignore[no-untyped-def]
    """A receiver as deployed with per-instance keys only (no WUZAPI_HMAC_KEY)."""
    return client_with(WUZAPI_HMAC_KEY="")


def body_for(instance: str = INSTANCE) -> bytes:
    envelope = load_envelope("message_text.json")
    envelope["instanceName"] = instance
    del envelope["userID"]
    return compact(envelope)


def post(client, body: bytes, path: str = "/webhooks/wuzapi",
         headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return client.post(path, data=body, headers={"Content-Type": JSON, **(headers or {})})


def test_an_unsigned_webhook_gets_401_and_enqueues_nothing(client) -> None:
    make_config()
    response = post(client, body_for())
    assert response.status_code == 401
    assert "webhook_path" in response.get_json()["error"]
    assert queued_tasks() == []


def test_the_401_is_the_same_whether_or_not_the_instance_exists(no_global_key) -> None:
    make_config(hmac_key=KEY_A)
    answers = set()
    for instance in (INSTANCE, "no-such-instance"):
        for path in ("/webhooks/wuzapi", f"/webhooks/wuzapi/{instance}",
                     f"/webhooks/wuzapi/{instance}/wrong-secret"):
            for headers in ({}, {"x-hmac-signature": "0" * 64}):
                response = post(no_global_key, body_for(instance), path, headers)
                answers.add((response.status_code, response.get_data()))
    assert answers == {(401, post(no_global_key, body_for()).get_data())}
    assert queued_tasks() == []


def test_a_webhook_signed_with_the_instances_own_key_is_queued(no_global_key) -> None:
    config = stored_config(make_config(hmac_key=KEY_A))
    body = body_for()
    response = post(no_global_key, body, headers=signed(body, KEY_A))
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["config_id"] == config.id


def test_one_tenants_key_does_not_sign_for_another(no_global_key) -> None:
    make_config(instance=INSTANCE, hmac_key=KEY_A)
    make_config(instance="outra-loja", hmac_key=KEY_B)
    body = body_for(INSTANCE)
    for path in ("/webhooks/wuzapi", f"/webhooks/wuzapi/{INSTANCE}"):
        assert post(no_global_key, body, path, signed(body, KEY_B)).status_code == 401
    assert queued_tasks() == []


def test_a_body_naming_two_instances_acts_only_for_the_one_whose_key_signed_it(
    no_global_key,
) -> None:
    make_config(instance=INSTANCE, hmac_key=KEY_A)
    other = stored_config(make_config(instance="outra-loja", hmac_key=KEY_B))
    envelope = load_envelope("message_text.json")
    envelope["instanceName"], envelope["userID"] = INSTANCE, "outra-loja"
    body = compact(envelope)
    response = post(no_global_key, body, headers=signed(body, KEY_B))
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert (kwargs["config_id"], kwargs["instance"]) == (other.id, "outra-loja")


def test_a_signed_body_replayed_to_another_instances_url_gets_401(client) -> None:
    make_config(instance=INSTANCE)
    make_config(instance="outra-loja")
    body = body_for(INSTANCE)
    response = post(client, body, "/webhooks/wuzapi/outra-loja", signed(body))
    assert response.status_code == 401
    assert queued_tasks() == []


def test_the_secret_path_authenticates_an_unsigned_webhook(no_global_key) -> None:
    config = stored_config(make_config())
    response = post(no_global_key, body_for(), configs.webhook_path(config))
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["config_id"] == config.id


def test_the_secret_path_takes_the_form_encoding_too(no_global_key) -> None:
    from tests.conftest import FIXTURES

    config = stored_config(make_config())
    response = no_global_key.post(
        configs.webhook_path(config), data=(FIXTURES / "message_text.form.txt").read_bytes(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.get_json()["status"] == "queued"


def test_a_secret_path_does_not_open_another_instance(no_global_key) -> None:
    mine = stored_config(make_config(instance="outra-loja"))
    make_config(instance=INSTANCE)
    secret = mine.webhook_secret
    response = post(no_global_key, body_for(INSTANCE), f"/webhooks/wuzapi/{INSTANCE}/{secret}")
    assert response.status_code == 401
    assert queued_tasks() == []


def test_a_rotated_secret_path_is_refused(client_with, admin_headers) -> None:
    client = client_with(WUZAPI_HMAC_KEY="")
    config = stored_config(make_config())
    old_path = configs.webhook_path(config)
    rotated = client.post(f"/api/workflow-configs/{config.id}/rotate-webhook-secret",
                          headers=admin_headers)
    assert rotated.status_code == 200
    new_path = rotated.get_json()["webhook_path"]
    assert new_path != old_path
    assert post(client, body_for(), old_path).status_code == 401
    assert post(client, body_for(), new_path).get_json()["status"] == "queued"


def test_a_deactivated_configs_secret_path_is_answered_ignored(no_global_key) -> None:
    config = stored_config(make_config(is_active=False))
    response = post(no_global_key, body_for(), configs.webhook_path(config))
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"


def test_a_malformed_body_from_a_stranger_gets_401_not_400(no_global_key) -> None:
    make_config(hmac_key=KEY_A)
    response = post(no_global_key, b"{not json", headers={"x-hmac-signature": "0" * 64})
    assert response.status_code == 401


def test_a_malformed_body_on_a_secret_path_gets_400(no_global_key) -> None:
    config = stored_config(make_config())
    response = post(no_global_key, b"{not json", configs.webhook_path(config))
    assert response.status_code == 400


def test_unsigned_webhooks_are_accepted_only_when_allowed(client_with) -> None:
    make_config()
    allowed = client_with(WUZAPI_HMAC_KEY="", WEBHOOK_ALLOW_UNSIGNED="true")
    assert post(allowed, body_for()).get_json()["status"] == "queued"


def test_allowing_unsigned_webhooks_warns_at_start(client_with, caplog) -> None:
    with caplog.at_level("WARNING"):
        client_with(WEBHOOK_ALLOW_UNSIGNED="true")
    assert "WEBHOOK_ALLOW_UNSIGNED" in caplog.text


def test_the_global_key_still_signs_for_any_instance(client) -> None:
    make_config(instance="outra-loja", hmac_key=KEY_B)
    body = body_for("outra-loja")
    assert post(client, body, headers=signed(body)).get_json()["status"] == "queued"


# --- the admin API -------------------------------------------------------------------------


def _create(client, admin_headers, **changes):  # type: ignore[no-untyped-def]
    values = {"name": "Loja", "instance": INSTANCE, "model": "openai/stub",
              "send": {"driver": "wuzapi", "base_url": "http://127.0.0.1:9", "token": "t"},
              **changes}
    return client.post("/api/workflow-configs", json=values, headers=admin_headers)


def test_a_created_config_carries_its_webhook_path_and_never_its_hmac_key(
    client, admin_headers,
) -> None:
    created = _create(client, admin_headers, hmac_key=KEY_A)
    assert created.status_code == 201
    view = created.get_json()
    assert view["webhook_path"].startswith(f"/webhooks/wuzapi/{INSTANCE}/")
    assert len(view["webhook_path"].rsplit("/", 1)[1]) >= 32
    shown = [view, client.get(f"/api/workflow-configs/{view['id']}", headers=admin_headers)
             .get_json(), client.get("/api/workflow-configs", headers=admin_headers).get_json()]
    for answer in shown:
        assert KEY_A not in json.dumps(answer)
    assert view["hmac_key"] == configs.MASK


def test_each_config_gets_its_own_secret(client, admin_headers) -> None:
    first = _create(client, admin_headers).get_json()["webhook_path"]
    second = _create(client, admin_headers, instance="outra-loja").get_json()["webhook_path"]
    assert first.rsplit("/", 1)[1] != second.rsplit("/", 1)[1]


@pytest.mark.parametrize("key", ["too-short", " " + "k" * 40, 42, configs.MASK])
def test_a_bad_hmac_key_gets_400(client, admin_headers, key) -> None:
    response = _create(client, admin_headers, hmac_key=key)
    assert response.status_code == 400
    assert "hmac_key" in response.get_json()["error"]


def test_echoing_the_masked_hmac_key_back_keeps_it(client, admin_headers) -> None:
    view = _create(client, admin_headers, hmac_key=KEY_A).get_json()
    changed = client.patch(f"/api/workflow-configs/{view['id']}", headers=admin_headers,
                           json={**{k: v for k, v in view.items() if k != "options"},
                                 "name": "Loja 2"})
    assert changed.status_code == 200, changed.get_json()
    with session_scope() as session:
        assert session.get(WorkflowConfig, view["id"]).hmac_key == KEY_A


def test_an_hmac_key_can_be_removed(client, admin_headers) -> None:
    view = _create(client, admin_headers, hmac_key=KEY_A).get_json()
    changed = client.patch(f"/api/workflow-configs/{view['id']}", headers=admin_headers,
                           json={"hmac_key": None})
    assert changed.get_json()["hmac_key"] is None


def test_rotating_the_secret_of_an_unknown_config_gets_404(client, admin_headers) -> None:
    response = client.post("/api/workflow-configs/999/rotate-webhook-secret",
                           headers=admin_headers)
    assert response.status_code == 404



def envelope_of(body: bytes, parsed: list[bytes]):  # type: ignore[no-untyped-def]
    """`authenticate`'s parser of `body`, noting in `parsed` each time it is called."""
    from zapreply.channel import wuzapi

    def parse() -> wuzapi.Envelope:
        parsed.append(body)
        return wuzapi.parse_envelope(JSON, body)

    return parse


def test_an_unsigned_body_is_refused_without_being_parsed(settings) -> None:
    from webhook_app import authentication

    parsed: list[bytes] = []
    body = body_for()

    verdict = authentication.authenticate(settings, Routes(0), body, None,
                                           envelope_of(body, parsed))

    assert verdict == authentication.Refused(authentication.UNAUTHENTICATED)
    assert parsed == []


def test_an_instance_key_trusts_the_webhook_for_that_instance_only(db, settings) -> None:
    from webhook_app import authentication

    make_config(hmac_key=KEY_A)
    body = body_for()
    parse = envelope_of(body, [])
    signature = signed(body, KEY_A)["x-hmac-signature"]

    assert authentication.authenticate(settings, Routes(0), body, signature, parse) == \
        authentication.Trusted(INSTANCE)
    assert authentication.authenticate(settings, Routes(0), body, signature, parse,
                                       url_instance="outra-loja") == \
        authentication.Refused(authentication.UNAUTHENTICATED)


def test_the_global_key_trusts_the_webhook_for_the_instance_its_url_and_body_name(
        settings) -> None:
    from webhook_app import authentication

    body = body_for()
    signature = signed(body)["x-hmac-signature"]
    parse = envelope_of(body, [])

    assert authentication.authenticate(settings, Routes(0), body, signature, parse,
                                       url_instance=INSTANCE) == authentication.Trusted(None)
    assert authentication.authenticate(settings, Routes(0), body, signature, parse,
                                       url_instance="outra-loja") == \
        authentication.Refused(authentication.WRONG_INSTANCE)
