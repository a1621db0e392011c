"""Whatever a client sends, the receiver answers 200/400/401/413, never a 5xx, and publishes
nothing unless it answered "queued" or "ignored".

One app, one config row and one database serve every example of a test; each example only
empties the Redis queue and the receiver's in-process caches, which keeps 200 examples cheap.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from functools import cache
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import signed
from tests.factories import make_config
from tests.webhook_app.test_webhooks import (
    ENVELOPES,
    FORM,
    INSTANCE,
    JSON,
    clear_queue,
    clients_with_settings,
    load_envelope,
    queued_messages,
)
from webhook_app import routing
from zapreply.broker.queue import HANDLE_INBOUND, RECORD_IGNORED

client_with = pytest.fixture(name="client_with")(clients_with_settings)

HMAC_KEY = "fuzz-hmac-key"
# Small enough that some generated bodies cross it.
MAX_BODY_BYTES = 4096

fuzz = settings(
    max_examples=200,
    deadline=None,
    database=None,
    # The app fixtures are built once per test on purpose; each example resets what it uses.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------------

ENVELOPE_KEYS = ["type", "event", "Info", "ID", "Chat", "Sender", "SenderAlt", "RecipientAlt",
                 "IsFromMe", "IsGroup", "Edit", "IsEdit", "Message", "conversation",
                 "extendedTextMessage", "text", "imageMessage", "documentWithCaptionMessage",
                 "message", "documentMessage", "caption", "reactionMessage", "NewsletterMeta",
                 "instanceName", "userID", "token", "base64", "s3", "PushName", "Timestamp"]
TYPES = ["Message", "ReadReceipt", "Presence", "ChatPresence", "Connected", "HistorySync"]

# Strings that broke, or could break, something downstream: the database (NUL, lone
# surrogates, column sizes), hmac.compare_digest (non-ASCII), the JID suffix checks.
NASTY_STRINGS = ["a\x00b", "\ud800", "é" * 64, "x" * 300, "5" * 20 + "@s.whatsapp.net",
                 "1@lid", "status@broadcast", "1@newsletter", "1@g.us", "7", " ", ""]
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.sampled_from([*TYPES, INSTANCE, *NASTY_STRINGS])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(ENVELOPE_KEYS) | st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)

CONTENT_TYPES = [JSON, FORM, "application/json; charset=utf-8",
                 "application/x-www-form-urlencoded; charset=UTF-8", "APPLICATION/JSON",
                 "text/plain", "multipart/form-data; boundary=x", "application/xml", ""]
# Header values travel as latin-1; no control characters.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                             exclude_characters="\x7f"), max_size=40)
content_types = st.sampled_from(CONTENT_TYPES) | header_text | st.none()
# A path segment: anything but '/' (which routes elsewhere) and unencodable surrogates.
path_instances = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="/"),
    min_size=1, max_size=20,
).filter(lambda s: s not in (".", ".."))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index at any depth, as a path from the root."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@cache
def _fixture(name: str) -> dict[str, Any]:
    return load_envelope(name)


MESSAGE_KEYS = ["conversation", "extendedTextMessage", "imageMessage", "audioMessage",
                "documentMessage", "documentWithCaptionMessage", "reactionMessage",
                "protocolMessage", "editedMessage", "stickerMessage"]
message_bodies = st.dictionaries(
    st.sampled_from(MESSAGE_KEYS),
    json_values | st.fixed_dictionaries({}, optional={
        "text": json_values, "caption": json_values,
        "message": json_values | st.fixed_dictionaries({}, optional={
            "documentMessage": json_values | st.fixed_dictionaries(
                {}, optional={"caption": json_values})}),
    }),
    max_size=3,
)


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    envelope = copy.deepcopy(_fixture(draw(st.sampled_from(ENVELOPES))))
    event = envelope.get("event")
    if isinstance(event, dict) and "Message" in event and draw(st.booleans()):
        event["Message"] = draw(message_bodies)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = _paths(envelope)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = envelope
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return envelope


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    # Without ASCII escapes a lone surrogate becomes bytes that are not UTF-8: garbage a client
    # could send too.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _form(fields: dict[str, bytes | str]) -> bytes:
    return urlencode(sorted(fields.items()), quote_via=quote_plus).encode("ascii")


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[bytes, str | None]:
    """A value as a JSON body, a form body or a legacy form body, usually with the matching
    Content-Type and sometimes with any other."""
    value = draw(values)
    ascii_only = draw(st.booleans())
    encoding = draw(st.sampled_from(["json", "form", "legacy form"]))
    if encoding == "json":
        body, content_type = _json_bytes(value, ascii_only), JSON
    else:
        inner = value
        fields: dict[str, bytes | str] = {}
        if isinstance(value, dict):
            inner = {k: v for k, v in value.items() if k not in ("instanceName", "userID")}
            if encoding == "form":
                for key in ("instanceName", "userID"):
                    if isinstance(value.get(key), str):
                        fields[key] = value[key].encode("utf-8", "surrogatepass")
        if encoding == "legacy form":
            fields["token"] = draw(st.sampled_from([INSTANCE, "unknown-token", ""]))
        fields["jsonData"] = _json_bytes(inner, ascii_only)
        body, content_type = _form(fields), FORM
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return body, draw(content_types)
    return body, content_type


# --- the property ----------------------------------------------------------------------------


# Signed with the suite's global key, as the deployment's WuzAPI would sign it.
_SUITE_KEY = object()


def _post(client, body: bytes, content_type: str | None, path: str = "/webhooks/wuzapi",
          signature: str | None | object = _SUITE_KEY):  # type: ignore[no-untyped-def]
    clear_queue()
    routing.routes_of(client.application).clear()
    headers = signed(body) if signature is _SUITE_KEY else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if isinstance(signature, str):
        headers["x-hmac-signature"] = signature
    return client.post(path, data=body, headers=headers)


def _assert_storable(kwargs: dict[str, Any]) -> None:
    """PostgreSQL text and JSONB hold neither NUL nor lone surrogates."""
    text = json.dumps(kwargs, ensure_ascii=False)
    assert "\x00" not in text
    text.encode("utf-8")


def _check(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code in (200, 400, 401, 413), response.get_data(as_text=True)
    answer = response.get_json()
    assert isinstance(answer, dict), response.get_data()
    tasks = queued_messages()
    if response.status_code != 200:
        assert answer.get("error")
        assert tasks == []
        return
    status = answer["status"]
    assert status in ("queued", "ignored", "duplicate")
    if status == "queued":
        [(task, kwargs)] = tasks
        assert task == HANDLE_INBOUND
        assert kwargs["message"]["wa_message_id"] == answer["message_id"]
        message = kwargs["message"]
        assert len(message["wa_message_id"]) <= 128
        assert len(message["chat_jid"]) <= 200
        assert len(message["contact_phone"] or "") <= 64
        assert len(message["push_name"] or "") <= 200
        _assert_storable(kwargs)
    elif status == "ignored":
        assert answer["reason"]
        assert [task for task, _ in tasks] in ([], [RECORD_IGNORED])
        for _, kwargs in tasks:
            _assert_storable(kwargs)
    else:
        assert tasks == []


@pytest.fixture
def fuzz_client(client_with):  # type: ignore[no-untyped-def]
    make_config()
    yield client_with(WEBHOOK_MAX_BODY_BYTES=MAX_BODY_BYTES)
    clear_queue()


@pytest.fixture
def signed_fuzz_client(client_with):  # type: ignore[no-untyped-def]
    make_config()
    yield client_with(WUZAPI_HMAC_KEY=HMAC_KEY, WEBHOOK_MAX_BODY_BYTES=MAX_BODY_BYTES)
    clear_queue()


@fuzz
@given(body=st.binary(max_size=2 * MAX_BODY_BYTES), content_type=content_types)
def test_random_bytes_never_get_a_server_error(fuzz_client, body: bytes,
                                               content_type: str | None) -> None:
    _check(_post(fuzz_client, body, content_type))


@fuzz
@given(request=encoded(json_values))
def test_random_json_never_gets_a_server_error(
    fuzz_client, request: tuple[bytes, str | None]
) -> None:
    _check(_post(fuzz_client, *request))


@fuzz
@given(request=encoded(mutated_envelopes()),
       path_instance=st.none() | st.just(INSTANCE) | path_instances)
def test_mutated_wuzapi_envelopes_never_get_a_server_error(
    fuzz_client, request: tuple[bytes, str | None], path_instance: str | None
) -> None:
    path = "/webhooks/wuzapi"
    if path_instance is not None:
        path += "/" + quote(path_instance, safe="")
    _check(_post(fuzz_client, *request, path=path))


@fuzz
@given(request=encoded(mutated_envelopes()),
       signature=st.sampled_from(["right", "RIGHT", "missing", "é" * 64]) | header_text)
def test_signed_deliveries_are_only_accepted_with_the_right_signature(
    signed_fuzz_client, request: tuple[bytes, str | None], signature: str
) -> None:
    body, content_type = request
    right = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    header = {"right": right, "RIGHT": right.upper(), "missing": None}.get(signature, signature)
    response = _post(signed_fuzz_client, body, content_type, signature=header)
    _check(response)
    if header is None or header.strip().lower() != right:
        assert response.status_code in (401, 413)
