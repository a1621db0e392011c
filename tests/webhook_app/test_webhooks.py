"""POST /webhooks/wuzapi against a real PostgreSQL and Redis, with WuzAPI's own wire formats.

No worker consumes the test queue here, so what the receiver published is read straight from
the Redis list.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
import redis

from tests.conftest import FIXTURES, REDIS_URL, ROOT, queued_tasks, signed
from tests.factories import make_config
from zapreply.broker.queue import HANDLE_INBOUND, QUEUE, RECORD_IGNORED

INSTANCE = "loja-teste"
USER_ID = "0123456789abcdef0123456789abcdef"
DEAD_BROKER = "redis://127.0.0.1:1/0"
DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/x"
# Slow enough to notice a retry loop, fast enough for WuzAPI's 30 s delivery timeout.
FAIL_FAST_SECONDS = 5.0

CUSTOMER_JID = "5511900000001@s.whatsapp.net"


# --- helpers (also used by test_fuzz) -------------------------------------------------------


def load_envelope(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def go_form(fields: dict[str, str]) -> bytes:
    """What Go's url.Values.Encode() makes of these fields: keys sorted, values query-escaped
    (space as '+', everything but A-Z a-z 0-9 - _ . ~ as %XX)."""
    return urlencode(sorted(fields.items()), quote_via=quote_plus).encode("ascii")


def as_form(envelope: dict[str, Any], *, legacy: bool = False, token: str = INSTANCE) -> bytes:
    """The envelope as WuzAPI's default form body (jsonData + instanceName + userID) or as an
    older build's (jsonData + token)."""
    inner = {k: v for k, v in envelope.items() if k not in ("instanceName", "userID")}
    json_data = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
    if legacy:
        return go_form({"jsonData": json_data, "token": token})
    return go_form({
        "instanceName": envelope.get("instanceName", ""),
        "jsonData": json_data,
        "userID": envelope.get("userID", ""),
    })


def compact(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def queued_messages() -> list[tuple[str, dict[str, Any]]]:
    """(task name, kwargs) of every task waiting in the test queue, oldest first."""
    client = redis.Redis.from_url(REDIS_URL)
    found = []
    # kombu's Redis transport LPUSHes and BRPOPs: the oldest message is at the right.
    for raw in reversed(client.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        found.append((message["headers"]["task"], kwargs))
    return found


def clear_queue() -> None:
    redis.Redis.from_url(REDIS_URL).delete(QUEUE)


def clients_with_settings(db, base_env):  # type: ignore[no-untyped-def]
    """Fixture body: builds test clients of apps with these settings on top of the test
    environment; each app's settings and database are its own, closed afterwards."""
    from webhook_app import create_app
    from webhook_app.extension import runtime_of

    built = []

    def build(**overrides: object):  # type: ignore[no-untyped-def]
        app = create_app({**base_env, **overrides})
        built.append(app)
        return app.test_client()

    yield build
    for app in built:
        runtime_of(app).database.dispose()


client_with = pytest.fixture(name="client_with")(clients_with_settings)


def post(client, body: bytes, content_type: str | None, path: str = "/webhooks/wuzapi",
         headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Signed with the suite's global key unless `headers` brings a signature of its own."""
    extra = signed(body) if headers is None else dict(headers)
    if content_type is not None:
        extra["Content-Type"] = content_type
    return client.post(path, data=body, headers=extra)


# --- what each fixture gets ------------------------------------------------------------------

# Webhook bodies whose answer depends only on the envelope.
QUEUED = {
    "message_text.json": {
        "wa_message_id": "3A00000000000000F001", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "Olá! Vocês abrem amanhã?",
        "media_type": None, "from_me": False, "push_name": "Cliente Teste Um",
    },
    "message_extended_text.json": {
        "wa_message_id": "3A00000000000000F002", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "Pode ser às 10h?",
        "media_type": None, "from_me": False,
    },
    "message_image.json": {
        "wa_message_id": "3A00000000000000F005", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "Segue a foto do produto",
        "media_type": "image", "from_me": False,
    },
    "message_image_s3.json": {
        "wa_message_id": "3A00000000000000F005", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "Segue a foto do produto",
        "media_type": "image", "from_me": False,
    },
    "message_audio.json": {
        "wa_message_id": "3A00000000000000F006", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "", "media_type": "audio", "from_me": False,
    },
    # Typed by the business on its phone: queued so the worker pauses the bot, never answered.
    "message_from_me.json": {
        "wa_message_id": "3A00000000000000F003", "chat_jid": CUSTOMER_JID,
        "contact_phone": "5511900000001", "text": "Oi! Já te respondo por aqui.",
        "media_type": None, "from_me": True, "push_name": None,
    },
}
RECORDED_AS_IGNORED = {
    "message_group.json": ("group chat", "3A00000000000000F004", "120363000000000001@g.us"),
}
IGNORED_UNRECORDED = ("read_receipt.json", "presence.json", "chat_presence.json")
ENVELOPES = sorted([*QUEUED, *RECORDED_AS_IGNORED, *IGNORED_UNRECORDED])
# The same message_text delivery in its exact wire forms.
WIRE_FORMS = ("message_text.raw.json", "message_text.form.txt", "message_text.jsonData.json")
NOT_WEBHOOKS = (
    "hmac_vectors.json", "send_text_request.json", "send_text_response.json",
    "send_text_response_legacy.json", "send_text_error.json",
)


def test_every_fixture_file_is_covered_by_these_tests() -> None:
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix in (".json", ".txt")}
    assert on_disk == {*ENVELOPES, *WIRE_FORMS, *NOT_WEBHOOKS}


def test_the_form_encoder_makes_wuzapis_exact_bytes() -> None:
    json_data = (FIXTURES / "message_text.jsonData.json").read_text()
    expected = (FIXTURES / "message_text.form.txt").read_bytes()
    assert go_form({"instanceName": INSTANCE, "jsonData": json_data, "userID": USER_ID}) == expected


def _encode(name: str, encoding: str) -> tuple[bytes, str]:
    envelope = load_envelope(name)
    if encoding == "json":
        return compact(envelope), JSON
    return as_form(envelope, legacy=encoding == "legacy form"), FORM


def _assert_outcome(name: str, response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    if name in QUEUED:
        expected = QUEUED[name]
        assert answer == {"status": "queued", "message_id": expected["wa_message_id"]}
        [(task, kwargs)] = queued_messages()
        assert task == HANDLE_INBOUND
        assert kwargs["instance"] == INSTANCE
        assert isinstance(kwargs["config_id"], int)
        message = kwargs["message"]
        assert {key: message[key] for key in expected} == expected
    elif name in RECORDED_AS_IGNORED:
        reason, wa_id, chat = RECORDED_AS_IGNORED[name]
        assert answer == {"status": "ignored", "reason": reason}
        [(task, kwargs)] = queued_messages()
        assert task == RECORD_IGNORED
        assert kwargs == {"instance": INSTANCE, "reason": reason, "wa_message_id": wa_id,
                          "chat_jid": chat}
    else:
        assert answer["status"] == "ignored"
        assert answer["reason"]
        assert queued_tasks() == []


@pytest.mark.parametrize("encoding", ["json", "form", "legacy form"])
@pytest.mark.parametrize("name", ENVELOPES)
def test_each_fixture_gets_its_answer_in_every_encoding(client, name: str, encoding: str) -> None:
    make_config()
    body, content_type = _encode(name, encoding)
    _assert_outcome(name, post(client, body, content_type))


def test_it_queues_the_exact_json_body_wuzapi_sends(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    _assert_outcome("message_text.json", post(client, body, JSON))


def test_it_queues_the_exact_form_body_wuzapi_sends(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.form.txt").read_bytes()
    _assert_outcome("message_text.json", post(client, body, FORM))


def test_it_stamps_when_it_took_the_message_beside_whatsapps_timestamp(client) -> None:
    # The worker measures a message's age at this moment (a backlog, max_message_age_minutes).
    make_config()
    before = time.time()
    post(client, (FIXTURES / "message_text.raw.json").read_bytes(), JSON)
    after = time.time()

    [(_task, kwargs)] = queued_messages()
    assert kwargs["message"]["timestamp"] == "2026-03-02T09:15:42-03:00"
    assert before <= kwargs["message"]["received_at"] <= after


def test_it_queues_a_decoded_json_data_field_posted_to_the_instance_path(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.jsonData.json").read_bytes()
    response = post(client, body, "application/json; charset=utf-8",
                    path=f"/webhooks/wuzapi/{INSTANCE}")
    _assert_outcome("message_text.json", response)


def test_it_takes_the_phone_from_sender_alt_under_lid_addressing(client) -> None:
    make_config()
    envelope = load_envelope("message_text.json")
    info = envelope["event"]["Info"]
    info.update(AddressingMode="lid", Chat="100000000000001@lid", Sender="100000000000001@lid",
                SenderAlt="5511900000001@s.whatsapp.net")
    response = post(client, compact(envelope), JSON)
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["message"]["chat_jid"] == "100000000000001@lid"
    assert kwargs["message"]["contact_phone"] == "5511900000001"


def test_a_message_typed_by_the_business_is_queued_marked_from_me(client) -> None:
    make_config()
    response = post(client, compact(load_envelope("message_from_me.json")), JSON)
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["message"]["from_me"] is True


def test_base64_media_survives_form_decoding(client) -> None:
    # '+' and '/' in base64 arrive as %2B and %2F; a parser that turned '+' into a space would
    # still find the text, so check the decoded envelope itself.
    from zapreply.channel import wuzapi

    envelope = load_envelope("message_audio.json")
    assert "+" in envelope["base64"]
    parsed = wuzapi.parse_envelope(FORM, as_form(envelope))
    assert parsed.media["base64"] == envelope["base64"]


def test_an_ignored_message_is_recorded_with_ids_the_worker_can_store(client) -> None:
    make_config()
    envelope = load_envelope("message_group.json")
    envelope["event"]["Info"]["ID"] = "3A\x0004"
    body = json.dumps(envelope).encode()
    assert post(client, body, JSON).get_json() == {"status": "ignored", "reason": "group chat"}
    [(task, kwargs)] = queued_messages()
    assert (task, kwargs["wa_message_id"]) == (RECORD_IGNORED, "3A04")


# --- instance resolution ---------------------------------------------------------------------


def test_an_instance_in_the_url_must_be_the_one_the_body_names(client) -> None:
    # A body signed for one instance, replayed to another instance's URL.
    make_config(instance=INSTANCE)
    make_config(instance="outra-loja")
    response = post(client, compact(load_envelope("message_text.json")), JSON,
                    path="/webhooks/wuzapi/outra-loja")
    assert response.status_code == 401
    assert queued_tasks() == []


def test_the_url_names_the_instance_of_a_body_that_names_none(client) -> None:
    # Older WuzAPI builds send only the user's token.
    make_config(instance=INSTANCE)
    other = make_config(instance="outra-loja")
    envelope = load_envelope("message_text.json")
    del envelope["instanceName"], envelope["userID"]
    envelope["token"] = "user-token-of-outra-loja"
    response = post(client, compact(envelope), JSON, path="/webhooks/wuzapi/outra-loja")
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert (kwargs["config_id"], kwargs["instance"]) == (other, "outra-loja")


def test_an_unknown_path_segment_is_refused_when_the_body_names_another_instance(
    client,
) -> None:
    make_config(instance=INSTANCE)
    response = post(client, compact(load_envelope("message_text.json")), JSON,
                    path="/webhooks/wuzapi/desconhecida")
    assert response.status_code == 401
    assert queued_tasks() == []


def test_instance_name_is_tried_before_user_id(client) -> None:
    by_user_id = make_config(instance=USER_ID)
    by_name = make_config(instance=INSTANCE)
    post(client, compact(load_envelope("message_text.json")), JSON)
    [(_, kwargs)] = queued_messages()
    assert kwargs["config_id"] == by_name != by_user_id


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_user_id_identifies_the_instance_when_the_name_matches_no_config(
    client, encoding: str
) -> None:
    config_id = make_config(instance=USER_ID)
    envelope = load_envelope("message_text.json")
    envelope["instanceName"] = ""  # what WuzAPI sends when its user cache misses
    body = compact(envelope) if encoding == "json" else as_form(envelope)
    response = post(client, body, JSON if encoding == "json" else FORM)
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert (kwargs["config_id"], kwargs["instance"]) == (config_id, USER_ID)


def test_a_legacy_token_identifies_the_instance(client) -> None:
    config_id = make_config(instance="legacy-user-token")
    body = as_form(load_envelope("message_text.json"), legacy=True, token="legacy-user-token")
    response = post(client, body, FORM)
    assert response.get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["config_id"] == config_id


def test_a_token_in_a_json_body_identifies_the_instance(client) -> None:
    config_id = make_config(instance="json-token")
    envelope = load_envelope("message_text.json")
    del envelope["instanceName"], envelope["userID"]
    envelope["token"] = "json-token"
    assert post(client, compact(envelope), JSON).get_json()["status"] == "queued"
    [(_, kwargs)] = queued_messages()
    assert kwargs["config_id"] == config_id


@pytest.mark.parametrize("name", ["message_text.json", "message_group.json"])
def test_an_unknown_instance_is_ignored_with_a_reason_and_nothing_is_enqueued(
    client, name: str
) -> None:
    make_config(instance="some-other-instance")
    response = post(client, compact(load_envelope(name)), JSON)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "ignored"
    assert "instance" in answer["reason"]
    assert queued_tasks() == []


def test_an_inactive_config_is_ignored(client) -> None:
    make_config(instance=INSTANCE, is_active=False)
    response = post(client, compact(load_envelope("message_text.json")), JSON)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert queued_tasks() == []


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "x" * 500])
def test_an_instance_name_no_config_can_have_is_ignored_not_a_server_error(
    client, name: str
) -> None:
    make_config()
    envelope = load_envelope("message_text.json")
    envelope["instanceName"] = name
    envelope["userID"] = name
    body = json.dumps(envelope).encode()  # ASCII-escaped, so the lone surrogate is sendable
    response = post(client, body, JSON)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert queued_tasks() == []


def test_an_instance_with_a_nul_in_the_path_is_ignored(client) -> None:
    make_config()
    envelope = load_envelope("message_text.json")
    del envelope["instanceName"], envelope["userID"]
    response = post(client, compact(envelope), JSON, path="/webhooks/wuzapi/loja%00teste")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert queued_tasks() == []


def test_a_message_that_names_no_instance_anywhere_is_rejected(client) -> None:
    make_config()
    envelope = load_envelope("message_text.json")
    del envelope["instanceName"], envelope["userID"]
    response = post(client, compact(envelope), JSON)
    assert response.status_code == 400
    assert "instance" in response.get_json()["error"]
    assert queued_tasks() == []


# --- signatures ------------------------------------------------------------------------------

VECTORS = json.loads((FIXTURES / "hmac_vectors.json").read_text())


@pytest.fixture
def signed_client(client_with):  # type: ignore[no-untyped-def]
    return client_with(WUZAPI_HMAC_KEY=VECTORS["hmac_key"])


@pytest.mark.parametrize("mode", ["json_mode", "form_mode"])
def test_it_accepts_wuzapis_signed_bodies(signed_client, mode: str) -> None:
    make_config()
    vector = VECTORS[mode]
    body = (FIXTURES / vector["body_file"]).read_bytes()
    response = post(signed_client, body, vector["content_type"],
                    headers={"X-Hmac-Signature": vector["signature"]})
    assert response.status_code == 200
    assert response.get_json()["status"] == "queued"
    assert queued_tasks() == [HANDLE_INBOUND]


def test_it_accepts_an_uppercase_signature(signed_client) -> None:
    make_config()
    vector = VECTORS["json_mode"]
    body = (FIXTURES / vector["body_file"]).read_bytes()
    response = post(signed_client, body, JSON,
                    headers={"x-hmac-signature": vector["signature"].upper()})
    assert response.status_code == 200


@pytest.mark.parametrize("signature", [
    None,
    "",
    "0" * 64,
    VECTORS["form_mode"]["signature"],  # a valid signature, of other bytes
    "fddc7fd224ef3c7222435dd4e9c7f59958b8adf460cd66432abd7e9b086367e",  # one digit short
    "é" * 64,  # not ASCII: compared safely, not a crash
])
def test_it_rejects_a_bad_or_missing_signature(signed_client, signature: str | None) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    headers = {"x-hmac-signature": signature} if signature is not None else {}
    response = post(signed_client, body, JSON, headers=headers)
    assert response.status_code == 401
    assert "signature" in response.get_json()["error"]
    assert queued_tasks() == []


def test_it_rejects_a_reserialised_body_with_the_original_signature(signed_client) -> None:
    # The signature covers the exact bytes; pretty-printing the same JSON breaks it.
    make_config()
    body = (FIXTURES / "message_text.json").read_bytes()
    response = post(signed_client, body, JSON,
                    headers={"x-hmac-signature": VECTORS["json_mode"]["signature"]})
    assert response.status_code == 401
    assert queued_tasks() == []


def test_it_checks_the_signature_before_reading_the_body(signed_client) -> None:
    # An unsigned garbage body gets 401, not a 400 that tells a stranger what we parse.
    response = post(signed_client, b"not json", JSON)
    assert response.status_code == 401


# --- malformed bodies ------------------------------------------------------------------------


def _message(**event: Any) -> bytes:
    return json.dumps({"type": "Message", "instanceName": INSTANCE, "event": event}).encode()


BAD_BODIES = {
    "not JSON": (JSON, b"{this is not json", "not valid JSON"),
    "JSON array": (JSON, b'[{"type": "Message"}]', "must be a JSON object"),
    "JSON string": (JSON, b'"Message"', "must be a JSON object"),
    "empty body": (JSON, b"", "not valid JSON"),
    "invalid UTF-8": (JSON, b'{"type": "\xff\xfe"}', "not valid JSON"),
    "deeply nested JSON": (JSON, b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    "missing type": (JSON, b'{"event": {}, "instanceName": "loja-teste"}', "type"),
    "empty type": (JSON, b'{"type": "", "event": {}}', "type"),
    "type not a string": (JSON, b'{"type": 7, "event": {}}', "type"),
    "event not an object": (JSON, b'{"type": "Message", "event": [1, 2]}', "'event'"),
    "form without jsonData": (FORM, b"instanceName=loja-teste&userID=abc", "jsonData"),
    "jsonData not JSON": (FORM, b"instanceName=loja-teste&jsonData=%7Bnope", "jsonData"),
    "jsonData an array": (FORM, b"jsonData=%5B%5D", "jsonData must be a JSON object"),
    "form not UTF-8": (FORM, b"jsonData=\xff", "UTF-8"),
    "unsupported content type": ("text/plain", b'{"type": "Message"}', "Content-Type"),
    "multipart": ("multipart/form-data; boundary=x", b"--x--", "Content-Type"),
    "no content type": (None, b'{"type": "Message"}', "Content-Type"),
    "Message without Info": (JSON, _message(), "Info"),
    "Info not an object": (JSON, _message(Info="3A01"), "Info"),
    "Message without Info.ID": (JSON, _message(Info={"Chat": CUSTOMER_JID}), "Info.ID"),
    "Message with an empty Info.ID": (
        JSON, _message(Info={"ID": "", "Chat": CUSTOMER_JID}), "Info.ID"),
    "Message without Info.Chat": (JSON, _message(Info={"ID": "3A01"}), "Info.Chat"),
    "Info.Chat not a string": (JSON, _message(Info={"ID": "3A01", "Chat": 5511}), "Info.Chat"),
    # Longer than the worker's columns: it could never store them.
    "Info.ID too long": (JSON, _message(Info={"ID": "3A" * 65, "Chat": CUSTOMER_JID}), "Info.ID"),
    "Info.Chat too long": (
        JSON, _message(Info={"ID": "3A01", "Chat": "5" * 200 + "@s.whatsapp.net"}), "Info.Chat"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_it_rejects_a_malformed_body_saying_what_is_wrong(client, case: str) -> None:
    make_config()
    content_type, body, problem = BAD_BODIES[case]
    response = post(client, body, content_type)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem in response.get_json()["error"]
    assert queued_tasks() == []


def test_a_get_is_answered_405_as_json(client) -> None:
    response = client.get("/webhooks/wuzapi")
    assert response.status_code == 405
    assert "error" in response.get_json()


# --- size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_a_body_over_the_limit_gets_413_as_json(client_with, encoding: str) -> None:
    make_config()
    client = client_with(WEBHOOK_MAX_BODY_BYTES=1024)
    body, content_type = _encode("message_image.json", encoding)
    assert len(body) > 1024
    response = post(client, body, content_type)
    assert response.status_code == 413
    assert response.is_json
    assert "limit" in response.get_json()["error"]
    assert queued_tasks() == []


def _chunked(client, body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    """A request without Content-Length whose end the server marks, as gunicorn does for
    Transfer-Encoding: chunked."""
    return client.post("/webhooks/wuzapi", data=body,
                       headers={"Content-Type": content_type, "Transfer-Encoding": "chunked",
                                **signed(body)},
                       environ_overrides={"wsgi.input_terminated": True})


def test_a_chunked_body_over_the_limit_gets_413_not_a_truncated_parse(client_with) -> None:
    make_config()
    client = client_with(WEBHOOK_MAX_BODY_BYTES=1024)
    body, content_type = _encode("message_image.json", "json")
    response = _chunked(client, body, content_type)
    assert response.status_code == 413
    assert queued_tasks() == []


def test_a_chunked_body_within_the_limit_is_queued(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.form.txt").read_bytes()
    assert _chunked(client, body, FORM).get_json()["status"] == "queued"


def test_a_chunked_body_of_exactly_the_limit_is_queued(client_with) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    client = client_with(WEBHOOK_MAX_BODY_BYTES=len(body))
    assert _chunked(client, body, JSON).get_json()["status"] == "queued"


class _Trickle(io.RawIOBase):
    """A WSGI input that hands out at most 100 bytes per read, as a server's may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        chunk = self._data.read(min(len(buffer), 100))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _post_stream(client, stream, content_length: int | None,
                 body: bytes):  # type: ignore[no-untyped-def]
    """A POST of `body`, whose WSGI input is `stream`, with that Content-Length or, for None,
    chunked (the server marking the body's end, as gunicorn does)."""
    environ = {"wsgi.input": stream}
    headers = {"Content-Type": JSON, **signed(body)}
    if content_length is None:
        environ["wsgi.input_terminated"] = True
        headers["Transfer-Encoding"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    return client.post("/webhooks/wuzapi", headers=headers, environ_overrides=environ)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_that_arrives_in_pieces_is_read_whole(client, chunked: bool) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    response = _post_stream(client, _Trickle(body), None if chunked else len(body), body)
    assert response.get_json()["status"] == "queued"


def test_a_body_shorter_than_its_content_length_gets_400(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    response = _post_stream(client, io.BytesIO(body), len(body) + 10, body)
    assert response.status_code == 400
    assert queued_tasks() == []


def test_a_body_just_under_the_limit_is_accepted(client_with) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    client = client_with(WEBHOOK_MAX_BODY_BYTES=len(body))
    assert post(client, body, JSON).get_json()["status"] == "queued"


# --- dependencies down -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["message_text.json", "message_group.json"])
def test_it_answers_503_fast_when_the_broker_is_unreachable(client_with, name: str) -> None:
    make_config()
    client = client_with(CELERY_BROKER_URL=DEAD_BROKER)
    started = time.monotonic()
    response = post(client, compact(load_envelope(name)), JSON)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "retry" in response.get_json()["error"]
    assert elapsed < FAIL_FAST_SECONDS
    assert queued_tasks() == []


def test_a_delivery_that_got_503_is_queued_when_retried(client_with) -> None:
    # The failed attempt must not be remembered as enqueued, or the retry would be "duplicate".
    make_config()
    body = compact(load_envelope("message_text.json"))
    dead = client_with(CELERY_BROKER_URL=DEAD_BROKER)
    assert post(dead, body, JSON).status_code == 503
    healthy = client_with()
    assert post(healthy, body, JSON).get_json()["status"] == "queued"
    assert queued_tasks() == [HANDLE_INBOUND]


def test_it_answers_503_fast_when_the_database_is_unreachable(client_with) -> None:
    client = client_with(DATABASE_URL=DEAD_DATABASE)
    started = time.monotonic()
    response = post(client, compact(load_envelope("message_text.json")), JSON)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "retry" in response.get_json()["error"]
    assert elapsed < FAIL_FAST_SECONDS
    assert queued_tasks() == []


def test_events_that_need_no_lookup_are_ignored_even_with_the_database_down(
    client_with,
) -> None:
    client = client_with(DATABASE_URL=DEAD_DATABASE)
    response = post(client, compact(load_envelope("read_receipt.json")), JSON)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"


@pytest.fixture
def hung_port():  # type: ignore[no-untyped-def]
    """A port that accepts connections and never answers (a stuck server, a half-open path),
    unlike a closed port, which refuses at once. Closing it resets the waiting clients."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


def _answer_within(seconds: float, call):  # type: ignore[no-untyped-def]
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return answers[0] if answers else None


def test_it_answers_503_fast_when_the_broker_hangs(client_with, hung_port: int) -> None:
    make_config()
    client = client_with(CELERY_BROKER_URL=f"redis://127.0.0.1:{hung_port}/0")
    body = compact(load_envelope("message_text.json"))
    response = _answer_within(FAIL_FAST_SECONDS, lambda: post(client, body, JSON))
    assert response is not None, "no answer: the receiver is stuck on the broker"
    assert response.status_code == 503


def test_it_answers_503_fast_when_the_database_hangs(client_with, hung_port: int) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{hung_port}/x"
    client = client_with(DATABASE_URL=url)
    body = compact(load_envelope("message_text.json"))
    response = _answer_within(FAIL_FAST_SECONDS, lambda: post(client, body, JSON))
    assert response is not None, "no answer: the receiver is stuck on the database"
    assert response.status_code == 503


# --- duplicates ------------------------------------------------------------------------------


def test_the_same_delivery_twice_is_queued_once(client) -> None:
    make_config()
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    first = post(client, body, JSON)
    second = post(client, body, JSON)
    assert first.get_json()["status"] == "queued"
    assert second.status_code == 200
    assert second.get_json() == {"status": "duplicate", "message_id": "3A00000000000000F001"}
    assert queued_tasks() == [HANDLE_INBOUND]


def test_the_same_message_in_the_other_encoding_is_a_duplicate_too(client) -> None:
    make_config()
    post(client, (FIXTURES / "message_text.raw.json").read_bytes(), JSON)
    response = post(client, (FIXTURES / "message_text.form.txt").read_bytes(), FORM)
    assert response.get_json()["status"] == "duplicate"
    assert queued_tasks() == [HANDLE_INBOUND]


def test_the_same_message_id_on_another_instance_is_not_a_duplicate(client) -> None:
    make_config(instance=INSTANCE)
    make_config(instance="outra-loja")
    envelope = load_envelope("message_text.json")
    post(client, compact(envelope), JSON)
    del envelope["userID"]
    envelope["instanceName"] = "outra-loja"
    response = post(client, compact(envelope), JSON, path="/webhooks/wuzapi/outra-loja")
    assert response.get_json()["status"] == "queued"
    assert queued_tasks() == [HANDLE_INBOUND, HANDLE_INBOUND]


# --- the process stays light -----------------------------------------------------------------


def test_the_receiver_never_imports_litellm(db, base_env, tmp_path: Path) -> None:
    script = (
        "import hashlib, hmac, os, sys, webhook_app\n"
        "app = webhook_app.create_app()\n"
        "client = app.test_client()\n"
        "assert client.get('/healthz').status_code == 200\n"
        f"body = open({str(FIXTURES / 'message_text.raw.json')!r}, 'rb').read()\n"
        "key = os.environ['WUZAPI_HMAC_KEY'].encode()\n"
        "signature = hmac.new(key, body, hashlib.sha256).hexdigest()\n"
        "r = client.post('/webhooks/wuzapi', data=body, content_type='application/json',"
        " headers={'x-hmac-signature': signature})\n"
        "assert r.status_code == 200, r.get_data()\n"
        "print('litellm' in sys.modules)\n"
    )
    env = {**os.environ, **base_env, "PYTHONPATH": str(ROOT)}
    env.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
