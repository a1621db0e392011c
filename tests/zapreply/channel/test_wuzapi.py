"""WuzAPI's webhook wire format, without HTTP: decoding, signatures, and which messages count."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FIXTURES, JPEG_THUMBNAIL
from tests.webhook_app.test_webhooks import FORM, JSON, as_form, compact, go_form
from zapreply.channel import wuzapi
from zapreply.channel.wuzapi import BadPayload, Envelope, InboundMessage

TEXT = json.loads((FIXTURES / "message_text.json").read_text())
CUSTOMER = "5511900000001@s.whatsapp.net"


def message_envelope(message: dict[str, Any] | None = None, **info: Any) -> Envelope:
    """message_text with its Message and Info fields replaced as given (None drops a key)."""
    envelope = copy.deepcopy(TEXT)
    event = envelope["event"]
    if message is not None:
        event["Message"] = message
    for key, value in info.items():
        if value is None:
            event["Info"].pop(key, None)
        else:
            event["Info"][key] = value
    return wuzapi.parse_envelope(JSON, compact(envelope))


def read(message: dict[str, Any] | None = None, **info: Any) -> InboundMessage | wuzapi.Ignored:
    return wuzapi.read_message(message_envelope(message, **info))


# --- parse_envelope --------------------------------------------------------------------------


def test_it_reads_the_json_envelope() -> None:
    envelope = wuzapi.parse_envelope(JSON, (FIXTURES / "message_text.raw.json").read_bytes())
    assert envelope.type == "Message"
    assert envelope.event["Info"]["ID"] == "3A00000000000000F001"
    assert envelope.instance_candidates() == ["loja-teste", "0123456789abcdef0123456789abcdef"]
    assert envelope.media == {}


def test_it_reads_the_form_envelope_to_the_same_event() -> None:
    from_json = wuzapi.parse_envelope(JSON, (FIXTURES / "message_text.raw.json").read_bytes())
    from_form = wuzapi.parse_envelope(FORM, (FIXTURES / "message_text.form.txt").read_bytes())
    assert from_form == from_json


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", " application/json ",
])
def test_it_accepts_content_type_parameters_and_any_case(content_type: str) -> None:
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    assert wuzapi.parse_envelope(content_type, body).type == "Message"


def test_legacy_form_fields_give_the_token_as_the_only_candidate() -> None:
    envelope = wuzapi.parse_envelope(FORM, as_form(TEXT, legacy=True, token="api-token"))
    assert (envelope.instance_name, envelope.user_id, envelope.token) == (None, None, "api-token")
    assert envelope.instance_candidates() == ["api-token"]


def test_form_fields_win_over_the_copies_inside_json_data() -> None:
    json_data = json.dumps({**TEXT, "instanceName": "inside", "userID": "inside-id"})
    body = go_form({"instanceName": "outside", "jsonData": json_data, "userID": "outside-id"})
    envelope = wuzapi.parse_envelope(FORM, body)
    assert envelope.instance_candidates() == ["outside", "outside-id"]


def test_older_builds_instance_fields_inside_json_data_are_used_when_the_form_lacks_them() -> None:
    json_data = json.dumps({**TEXT, "instanceName": "inside", "userID": "inside-id"})
    envelope = wuzapi.parse_envelope(FORM, go_form({"jsonData": json_data, "token": "tok"}))
    assert envelope.instance_candidates() == ["inside", "inside-id", "tok"]


def test_blank_instance_fields_are_not_candidates() -> None:
    body = go_form({"instanceName": "  ", "jsonData": json.dumps(TEXT), "userID": ""})
    envelope = wuzapi.parse_envelope(FORM, body)
    # jsonData's own copies fill in for the blank form fields.
    assert envelope.instance_candidates() == ["loja-teste", "0123456789abcdef0123456789abcdef"]
    bare = {k: v for k, v in TEXT.items() if k not in ("instanceName", "userID")}
    body = go_form({"instanceName": "", "jsonData": json.dumps(bare), "userID": " "})
    assert wuzapi.parse_envelope(FORM, body).instance_candidates() == []


def test_non_string_instance_fields_in_json_are_not_candidates() -> None:
    body = json.dumps({**TEXT, "instanceName": 42, "userID": None, "token": ["x"]}).encode()
    assert wuzapi.parse_envelope(JSON, body).instance_candidates() == []


def test_an_event_of_null_reads_as_an_empty_object() -> None:
    envelope = wuzapi.parse_envelope(JSON, b'{"type": "Connected", "event": null}')
    assert envelope.event == {}
    assert wuzapi.read_message(envelope).reason == "event type Connected is not a message"


def test_a_missing_event_reads_as_an_empty_object() -> None:
    assert wuzapi.parse_envelope(JSON, b'{"type": "Disconnected"}').event == {}


def test_base64_plus_and_slash_survive_form_decoding() -> None:
    audio = json.loads((FIXTURES / "message_audio.json").read_text())
    body = as_form(audio)
    assert b"%2B" in body and b"%2F" in body
    envelope = wuzapi.parse_envelope(FORM, body)
    assert envelope.media["base64"] == audio["base64"]
    assert "+" in envelope.media["base64"]
    assert envelope.media["mimeType"] == "audio/ogg; codecs=opus"


def test_form_fields_wuzapi_does_not_send_are_ignored() -> None:
    body = as_form(TEXT) + b"&utm_source=x&jsonData=%7B%22type%22%3A%22Other%22%7D&extra"
    envelope = wuzapi.parse_envelope(FORM, body)
    # The first jsonData counts, as parse_qs's first value did.
    assert envelope.type == "Message"
    assert envelope.instance_candidates() == ["loja-teste", "0123456789abcdef0123456789abcdef"]


def test_percent_encoded_form_field_names_are_still_read() -> None:
    body = b"json%44ata=" + as_form(TEXT).split(b"jsonData=", 1)[1]
    envelope = wuzapi.parse_envelope(FORM, body)
    assert envelope.event["Info"]["ID"] == "3A00000000000000F001"


def test_a_form_with_more_fields_than_wuzapi_could_send_is_refused_by_name() -> None:
    body = as_form(TEXT) + b"&a=" * wuzapi.MAX_FORM_FIELDS
    with pytest.raises(BadPayload, match=f"more than {wuzapi.MAX_FORM_FIELDS} fields"):
        wuzapi.parse_envelope(FORM, body)


def test_a_form_with_as_many_fields_as_allowed_is_read() -> None:
    body = as_form(TEXT) + b"&a=" * (wuzapi.MAX_FORM_FIELDS - 3)
    assert body.count(b"&") == wuzapi.MAX_FORM_FIELDS - 1
    assert wuzapi.parse_envelope(FORM, body).type == "Message"


def test_a_million_empty_form_fields_are_refused_without_being_split() -> None:
    body = b"a=&" * 1_000_000 + as_form(TEXT)
    with pytest.raises(BadPayload, match="fields"):
        wuzapi.parse_envelope(FORM, body)


@given(st.lists(st.sampled_from([
    "%", "%4", "%41", "%c3", "%A9", "%E2%82", "%AC", "%zz", "%%", "%FF", "%5C", "%5Cx41", "\\",
    "\\x41", "\\n", "+", " ", "a", "é", "€", "=",
]), max_size=16).map("".join))
def test_form_values_decode_as_urllib_unquote_decodes_them(value: str) -> None:
    assert wuzapi._unquote_plus(value) == unquote(value.replace("+", " "))


def test_a_form_body_made_of_percent_escapes_is_read() -> None:
    escaped = "".join(f"%{byte:02X}" for byte in json.dumps(TEXT).encode())
    envelope = wuzapi.parse_envelope(FORM, f"jsonData={escaped}".encode())
    assert envelope.event == TEXT["event"]


def test_a_form_body_with_a_few_stray_percent_signs_is_read_but_not_one_made_of_them() -> None:
    text = dict(TEXT, event={**TEXT["event"], "Message": {"conversation": "50% off, 100% sure"}})
    body = b"jsonData=" + json.dumps(text).encode().replace(b" ", b"+")
    assert wuzapi.parse_envelope(FORM, body).event["Message"]["conversation"] == \
        "50% off, 100% sure"
    with pytest.raises(BadPayload, match="'%' that start no percent-escape"):
        wuzapi.parse_envelope(FORM, b"jsonData=" + b"%zz" * 65)


def test_s3_media_is_kept_with_the_envelope() -> None:
    image = json.loads((FIXTURES / "message_image_s3.json").read_text())
    envelope = wuzapi.parse_envelope(FORM, as_form(image))
    assert envelope.media == {"s3": image["s3"]}


def test_unknown_keys_are_ignored() -> None:
    body = json.dumps({**TEXT, "serverId": "", "somethingNew": {"a": 1}}).encode()
    assert wuzapi.parse_envelope(JSON, body).type == "Message"


@pytest.mark.parametrize(("content_type", "body", "problem"), [
    (JSON, b"nope", "body is not valid JSON"),
    (JSON, b"[]", "body must be a JSON object"),
    (JSON, b"null", "body must be a JSON object"),
    (JSON, b"{" * 50_000, "body is not valid JSON"),
    (JSON, b'{"event": {}}', "missing event type"),
    (JSON, b'{"type": "Message", "event": "x"}', "'event' must be an object"),
    (FORM, b"", "no jsonData"),
    (FORM, b"jsonData", "jsonData is not valid JSON"),
    (FORM, b"jsonData=1", "jsonData must be a JSON object"),
    (FORM, b"jsonData=\xc3", "not valid UTF-8"),
    ("text/json", b"{}", "unsupported Content-Type"),
    (None, b"{}", "unsupported Content-Type"),
])
def test_it_names_what_is_wrong_with_a_bad_body(
    content_type: str | None, body: bytes, problem: str
) -> None:
    with pytest.raises(BadPayload, match=problem):
        wuzapi.parse_envelope(content_type, body)


# --- verify_signature ------------------------------------------------------------------------

VECTORS = json.loads((FIXTURES / "hmac_vectors.json").read_text())


@pytest.mark.parametrize("mode", ["json_mode", "form_mode"])
def test_the_published_vectors_verify(mode: str) -> None:
    body = (FIXTURES / VECTORS[mode]["body_file"]).read_bytes()
    assert wuzapi.verify_signature(VECTORS["hmac_key"], body, VECTORS[mode]["signature"])


def test_a_signature_with_surrounding_whitespace_and_uppercase_verifies() -> None:
    body = b"{}"
    signature = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert wuzapi.verify_signature("k", body, f" {signature.upper()}\t")


@pytest.mark.parametrize("signature", [None, "", "zz", "é" * 64, "\x00" * 64, "sha256=abc"])
def test_a_wrong_or_strange_signature_is_refused_without_raising(signature: str | None) -> None:
    assert wuzapi.verify_signature("k", b"{}", signature) is False


def test_a_signature_for_another_key_is_refused() -> None:
    body = (FIXTURES / "message_text.raw.json").read_bytes()
    assert not wuzapi.verify_signature("other-key", body, VECTORS["json_mode"]["signature"])


# --- read_message ----------------------------------------------------------------------------


def test_a_customer_text_becomes_an_inbound_message() -> None:
    assert read() == InboundMessage(
        wa_message_id="3A00000000000000F001",
        chat_jid=CUSTOMER,
        sender_jid=CUSTOMER,
        contact_phone="5511900000001",
        push_name="Cliente Teste Um",
        from_me=False,
        timestamp="2026-03-02T09:15:42-03:00",
        text="Olá! Vocês abrem amanhã?",
        media_type=None,
        chat_alt_jid="100000000000001@lid",
    )


def test_the_payload_is_plain_json() -> None:
    message = read()
    assert isinstance(message, InboundMessage)
    assert json.loads(json.dumps(message.as_payload())) == message.as_payload()


def test_under_lid_addressing_the_phone_comes_from_sender_alt() -> None:
    message = read(Chat="100000000000001@lid", Sender="100000000000001@lid",
                   SenderAlt="5511900000001@s.whatsapp.net", AddressingMode="lid")
    assert isinstance(message, InboundMessage)
    assert message.chat_jid == "100000000000001@lid"
    assert message.contact_phone == "5511900000001"


def test_under_lid_addressing_a_message_from_me_takes_the_phone_from_recipient_alt() -> None:
    message = read(Chat="100000000000001@lid", Sender="5511900000099@s.whatsapp.net",
                   SenderAlt="", RecipientAlt="5511900000001@s.whatsapp.net", IsFromMe=True)
    assert isinstance(message, InboundMessage)
    assert message.from_me is True
    assert message.contact_phone == "5511900000001"
    assert message.push_name is None


def test_a_lid_chat_carries_the_phones_jid_as_its_other_address_without_the_device() -> None:
    message = read(Chat="100000000000001@lid", Sender="100000000000001@lid",
                   SenderAlt="5511900000001:7@s.whatsapp.net", AddressingMode="lid")
    assert message.chat_alt_jid == "5511900000001@s.whatsapp.net"
    assert wuzapi.InboundPayload.from_task(json.loads(json.dumps(message.as_payload()))) \
        .chat_alt_jid == "5511900000001@s.whatsapp.net"


def test_the_business_own_message_takes_the_other_address_from_recipient_alt() -> None:
    message = read(Chat="100000000000001@lid", Sender="5511900000099@s.whatsapp.net",
                   SenderAlt="", RecipientAlt="5511900000001@s.whatsapp.net", IsFromMe=True)
    assert message.chat_alt_jid == "5511900000001@s.whatsapp.net"


@pytest.mark.parametrize("alt", ["", "5511900000002@s.whatsapp.net", "abc@lid",
                                 "120363000000000001@g.us", 42, None])
def test_an_alt_that_is_not_the_chats_other_kind_of_address_is_not_carried(alt: Any) -> None:
    message = read(Chat=CUSTOMER, Sender=CUSTOMER, SenderAlt=alt)
    assert message.chat_alt_jid is None
    assert "chat_alt_jid" not in message.as_payload()


def test_a_group_message_has_no_other_chat_address() -> None:
    message = wuzapi.read_message(message_envelope(
        Chat="120363000000000001@g.us", IsGroup=True, Sender="100000000000001@lid",
        SenderAlt="5511900000001@s.whatsapp.net"), groups=True)
    assert isinstance(message, InboundMessage) and message.chat_alt_jid is None


def test_a_lid_chat_without_an_alt_phone_has_no_contact_phone() -> None:
    message = read(Chat="100000000000001@lid", Sender="100000000000001@lid", SenderAlt="")
    assert isinstance(message, InboundMessage)
    assert message.contact_phone is None


@pytest.mark.parametrize(("chat", "phone"), [
    ("5511900000001:12@s.whatsapp.net", "5511900000001"),
    ("5511900000001.0:12@s.whatsapp.net", "5511900000001"),
    ("not-a-number@s.whatsapp.net", None),
    ("@s.whatsapp.net", None),
])
def test_the_contact_phone_is_only_ever_digits(chat: str, phone: str | None) -> None:
    message = read(Chat=chat, SenderAlt="")
    assert isinstance(message, InboundMessage)
    assert message.contact_phone == phone


def test_missing_optional_info_keys_are_tolerated() -> None:
    envelope = wuzapi.parse_envelope(JSON, json.dumps({
        "type": "Message",
        "event": {"Info": {"ID": "3A01", "Chat": CUSTOMER}, "Message": {"conversation": "oi"}},
    }).encode())
    message = wuzapi.read_message(envelope)
    assert message == InboundMessage(
        wa_message_id="3A01", chat_jid=CUSTOMER, sender_jid=CUSTOMER,
        contact_phone="5511900000001", push_name=None, from_me=False, timestamp=None,
        text="oi", media_type=None,
    )


def test_a_message_with_no_message_object_has_no_content() -> None:
    envelope = copy.deepcopy(TEXT)
    del envelope["event"]["Message"]
    assert wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(envelope))).reason \
        == "no content"


@pytest.mark.parametrize("message", [{}, {"conversation": ""}, {"messageContextInfo": {}},
                                     {"senderKeyDistributionMessage": {"groupID": "x"}}])
def test_a_message_without_text_or_media_is_ignored_as_no_content(
    message: dict[str, Any]
) -> None:
    assert read(message).reason == "no content"


@pytest.mark.parametrize(("message", "reason"), [
    ({"reactionMessage": {"text": "👍", "key": {"ID": "3A00"}}}, "reaction"),
    ({"encReactionMessage": {"encPayload": "AA=="}}, "reaction"),
    ({"protocolMessage": {"type": 0, "key": {"ID": "3A00"}}}, "protocol"),
    ({"editedMessage": {"message": {"conversation": "corrigido"}}}, "edit"),
    ({"pollUpdateMessage": {}}, "poll update"),
    ({"pinInChatMessage": {}}, "pin"),
    ({"keepInChatMessage": {}}, "keep in chat"),
])
def test_things_that_are_not_something_the_customer_said_are_ignored(
    message: dict[str, Any], reason: str
) -> None:
    assert read(message).reason == reason


def test_a_reaction_names_its_emoji_and_the_message_it_reacts_to() -> None:
    reaction = read({"reactionMessage": {"key": {"remoteJID": CUSTOMER, "fromMe": True,
                                                 "ID": "3EB0REPLY0001"},
                                         "text": "👍", "senderTimestampMS": 1772454000000}})
    assert isinstance(reaction, wuzapi.Ignored)
    assert (reaction.reason, reaction.details) == (
        "reaction", {"target_id": "3EB0REPLY0001", "emoji": "👍", "from_me": False})
    taken_back = read({"reactionMessage": {"key": {"ID": "3EB0REPLY0001"}, "text": ""}},
                      IsFromMe=True)
    assert taken_back.details == {"target_id": "3EB0REPLY0001", "emoji": "", "from_me": True}


def test_a_direct_message_quoting_another_carries_the_quote() -> None:
    envelope = wuzapi.parse_envelope(
        JSON, (FIXTURES / "message_extended_text.json").read_bytes())
    message = wuzapi.read_message(envelope)
    assert isinstance(message, InboundMessage) and not message.is_group
    payload = message.as_payload()
    assert (payload["quoted_id"], payload["quoted_sender"], payload["quoted_text"]) == (
        "3EB0000000000000000B01", "5511900000099@s.whatsapp.net",
        "Temos horário amanhã de manhã.")
    assert "is_group" not in payload and "mentions" not in payload
    assert wuzapi.InboundPayload.from_task(json.loads(json.dumps(payload))).quoted_text \
        == "Temos horário amanhã de manhã."


def test_a_quoted_photo_without_caption_is_named_by_its_kind_and_long_quotes_are_cut() -> None:
    photo = read({"extendedTextMessage": {"text": "quanto custa?", "contextInfo": {
        "stanzaID": "3EB0", "quotedMessage": {"imageMessage": {"mimetype": "image/jpeg"}}}}})
    assert photo.quoted_text == "[image]"
    long = read({"extendedTextMessage": {"text": "e isso?", "contextInfo": {
        "stanzaID": "3EB1", "quotedMessage": {"conversation": "x" * 5000}}}})
    assert long.quoted_text == "x" * wuzapi.MAX_QUOTED_CHARS


def test_a_message_quoting_nothing_carries_no_quote_fields() -> None:
    payload = read().as_payload()
    assert not {"quoted_id", "quoted_sender", "quoted_text"} & set(payload)


def test_an_edit_flagged_by_whatsmeow_is_ignored() -> None:
    envelope = copy.deepcopy(TEXT)
    envelope["event"]["IsEdit"] = True
    assert wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(envelope))).reason \
        == "edit"
    assert read(Edit="1").reason == "edit"


@pytest.mark.parametrize("edit", ["7", "8"])
def test_a_revoked_message_is_ignored_as_a_deletion(edit: str) -> None:
    assert read(Edit=edit).reason == "deletion"


def test_a_strange_edit_attribute_does_not_crash() -> None:
    assert read(Edit=["7"]).reason == "edit"
    assert read(Edit={"x": 1}).reason == "edit"
    assert isinstance(read(Edit=0), InboundMessage)


@pytest.mark.parametrize(("info", "reason"), [
    ({"Chat": "status@broadcast"}, "status or broadcast"),
    ({"Chat": "1234567890@broadcast"}, "status or broadcast"),
    ({"Chat": "120363000000000009@newsletter"}, "newsletter"),
    ({"Chat": "120363000000000001@g.us", "IsGroup": False}, "group chat"),
    ({"IsGroup": True}, "group chat"),
])
def test_chats_that_are_not_one_to_one_are_ignored(info: dict[str, Any], reason: str) -> None:
    assert read(**info).reason == reason


def test_an_ignored_message_says_whether_it_was_a_group_or_no_message_at_all() -> None:
    group = read(IsGroup=True)
    assert isinstance(group, wuzapi.Ignored)
    assert (group.is_group, group.is_message) == (True, True)
    receipt = wuzapi.read_message(wuzapi.parse_envelope(JSON, b'{"type": "ReadReceipt"}'))
    assert isinstance(receipt, wuzapi.Ignored)
    assert (receipt.is_group, receipt.is_message) == (False, False)
    assert read(Chat="status@broadcast") == wuzapi.Ignored("status or broadcast")


def test_newsletter_metadata_marks_a_newsletter() -> None:
    envelope = copy.deepcopy(TEXT)
    envelope["event"]["NewsletterMeta"] = {"EditTS": "0001-01-01T00:00:00Z"}
    assert wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(envelope))).reason \
        == "newsletter"


def test_an_extended_text_is_read_as_text() -> None:
    message = read({"extendedTextMessage": {"text": "Pode ser às 10h?",
                                            "contextInfo": {"stanzaID": "3EB0"}}})
    assert isinstance(message, InboundMessage)
    assert (message.text, message.media_type) == ("Pode ser às 10h?", None)


@pytest.mark.parametrize(("message", "text", "media_type"), [
    ({"imageMessage": {"caption": "foto", "mimetype": "image/jpeg"}}, "foto", "image"),
    ({"imageMessage": {"mimetype": "image/jpeg"}}, "", "image"),
    ({"audioMessage": {"PTT": True}}, "", "audio"),
    ({"videoMessage": {"caption": 7}}, "", "video"),
    ({"documentMessage": {"caption": "nota", "fileName": "a.pdf"}}, "nota", "document"),
    ({"documentWithCaptionMessage": {"message": {"documentMessage": {"caption": "contrato"}}}},
     "contrato", "document"),
    ({"documentWithCaptionMessage": {"message": "x"}}, "", "document"),
    ({"documentWithCaptionMessage": {"message": {"documentMessage": ["x"]}}}, "", "document"),
    ({"documentWithCaptionMessage": {}}, "", "document"),
    ({"stickerMessage": {}}, "", "sticker"),
    ({"locationMessage": {"degreesLatitude": -23.5}}, "", "location"),
    ({"contactMessage": {"displayName": "Ana"}}, "", "contact"),
])
def test_media_is_read_with_its_caption(
    message: dict[str, Any], text: str, media_type: str
) -> None:
    result = read(message)
    assert isinstance(result, InboundMessage), result
    assert (result.text, result.media_type) == (text, media_type)


def test_a_media_key_that_is_not_an_object_is_skipped() -> None:
    assert read({"imageMessage": "nope"}).reason == "no content"


def test_whatsapps_jpeg_thumbnail_of_an_image_is_kept_with_its_media_reference() -> None:
    image = json.loads((FIXTURES / "message_image.json").read_text())
    image["event"]["Message"]["imageMessage"]["JPEGThumbnail"] = JPEG_THUMBNAIL
    message = wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(image)))
    assert isinstance(message, InboundMessage)
    assert message.media["thumbnail"] == JPEG_THUMBNAIL
    assert message.media["mimetype"] == "image/jpeg"


@pytest.mark.parametrize("thumbnail", [
    # The fixture's own: base64, but not a JPEG.
    "1A/Wo0nlwUaux/lidneTq1EJSsgUc/3BvLx3sPsGMN1d3eSc5ays6YUdXGVNB25pVqFzjwHvN4XVL9cK",
    # SVG with a script, as base64.
    "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciPjxzY3JpcHQ+YWxlcnQoMSk8L3NjcmlwdD48L3N2Zz4=",
    "/9j/not base64!",  # starts like a JPEG, then is not base64
    '/9j/" onerror="alert(1)',
    JPEG_THUMBNAIL + "A" * wuzapi.MAX_THUMBNAIL_CHARS,  # too large
    12345,
    "",
])
def test_a_thumbnail_that_is_not_a_small_jpeg_is_not_kept(thumbnail: Any) -> None:
    message = read({"imageMessage": {"caption": "foto", "mimetype": "image/jpeg",
                                     "JPEGThumbnail": thumbnail}})
    assert isinstance(message, InboundMessage)
    assert "thumbnail" not in (message.media or {})


def test_text_wins_over_media_keys_in_the_same_message() -> None:
    message = read({"conversation": "oi", "imageMessage": {"caption": "foto"}})
    assert isinstance(message, InboundMessage)
    assert (message.text, message.media_type) == ("oi", None)


def test_from_me_is_true_only_for_a_real_true() -> None:
    for value in ("true", 1, None):
        message = read(IsFromMe=value)
        assert isinstance(message, InboundMessage)
        assert message.from_me is False


def test_a_message_from_me_keeps_no_push_name() -> None:
    me = json.loads((FIXTURES / "message_from_me.json").read_text())
    message = wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(me)))
    assert isinstance(message, InboundMessage)
    assert message.from_me is True
    assert message.push_name is None
    assert message.sender_jid == "5511900000099@s.whatsapp.net"
    assert message.contact_phone == "5511900000001"


def test_what_postgres_cannot_store_is_removed_from_the_payload() -> None:
    envelope = wuzapi.parse_envelope(JSON, json.dumps({
        "type": "Message",
        "event": {
            "Info": {"ID": "3A\x0001", "Chat": CUSTOMER, "PushName": "Ana\ud800"},
            "Message": {"conversation": "oi\x00 tudo bem\udfff"},
        },
    }).encode())
    message = wuzapi.read_message(envelope)
    assert isinstance(message, InboundMessage)
    assert message.wa_message_id == "3A01"
    assert message.text == "oi tudo bem?"
    assert message.push_name == "Ana?"
    message.as_payload()
    json.dumps(message.as_payload(), ensure_ascii=False).encode("utf-8")


def test_a_long_push_name_is_cut_to_what_the_worker_stores() -> None:
    message = read(PushName="A" * 500)
    assert isinstance(message, InboundMessage)
    assert message.push_name == "A" * wuzapi.MAX_NAME_LENGTH


def test_a_number_longer_than_e164_is_not_a_phone() -> None:
    message = read(Chat="5" * 16 + "@s.whatsapp.net", SenderAlt="")
    assert isinstance(message, InboundMessage)
    assert message.contact_phone is None


def test_ids_up_to_the_column_sizes_are_accepted() -> None:
    chat = "5" * (wuzapi.MAX_JID_LENGTH - len("@s.whatsapp.net")) + "@s.whatsapp.net"
    message = read(ID="A" * wuzapi.MAX_MESSAGE_ID_LENGTH, Chat=chat)
    assert isinstance(message, InboundMessage)


def test_a_text_of_only_nul_has_no_content() -> None:
    assert read({"conversation": "\x00"}).reason == "no content"


@pytest.mark.parametrize(("event", "problem"), [
    ({}, "no Info object"),
    ({"Info": None}, "no Info object"),
    ({"Info": []}, "no Info object"),
    ({"Info": {"Chat": CUSTOMER}}, "no Info.ID"),
    ({"Info": {"ID": 12, "Chat": CUSTOMER}}, "no Info.ID"),
    ({"Info": {"ID": "3A01"}}, "no Info.Chat"),
    ({"Info": {"ID": "3A01", "Chat": ""}}, "no Info.Chat"),
    ({"Info": {"ID": "\x00", "Chat": CUSTOMER}}, "no Info.ID"),
    ({"Info": {"ID": "3A01", "Chat": "\x00\x00"}}, "no Info.Chat"),
    ({"Info": {"ID": "A" * 129, "Chat": CUSTOMER}}, "Info.ID is longer than 128"),
    ({"Info": {"ID": "3A01", "Chat": "5" * 201}}, "Info.Chat is longer than 200"),
    # Checked before the group filter: an ignored message is recorded with these ids too.
    ({"Info": {"ID": "A" * 129, "Chat": "1@g.us"}}, "Info.ID is longer"),
])
def test_a_message_event_without_its_identity_is_a_bad_payload(
    event: dict[str, Any], problem: str
) -> None:
    envelope = wuzapi.parse_envelope(JSON, json.dumps({"type": "Message", "event": event}).encode())
    with pytest.raises(BadPayload, match=problem):
        wuzapi.read_message(envelope)


@pytest.mark.parametrize("name", ["read_receipt.json", "presence.json", "chat_presence.json"])
def test_other_event_types_are_not_messages(name: str) -> None:
    envelope = wuzapi.parse_envelope(JSON, (FIXTURES / name).read_bytes())
    assert wuzapi.read_message(envelope).reason == f"event type {envelope.type} is not a message"


def test_the_worker_reads_back_every_field_the_receiver_queued() -> None:
    message = wuzapi.read_message(message_envelope(IsGroup=True), groups=True)
    assert isinstance(message, InboundMessage) and message.is_group

    payload = wuzapi.InboundPayload.from_task(json.loads(json.dumps(message.as_payload())))

    assert {name: getattr(payload, name) for name in message.__dataclass_fields__} \
        == vars(message)


def test_a_task_queued_with_only_the_ids_is_still_read() -> None:
    payload = wuzapi.InboundPayload.from_task({"wa_message_id": "3A01", "chat_jid": "55@s"})

    assert (payload.text, payload.from_me, payload.is_group, payload.mentions) == (
        "", False, False, ())
    assert payload.sender_jid is None and payload.media is None
