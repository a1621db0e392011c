"""Media without a worker: the reference the receiver passes on, how media reads to the model,
decoding what WuzAPI sends, the media options, and failures that need no network."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.factories import make_config
from tests.webhook_app.test_webhooks import JSON, client_with, compact  # noqa: F401
from zapreply.broker.queue import HANDLE_INBOUND
from zapreply.channel import wuzapi
from zapreply.replies import media
from zapreply.rules.configs import InvalidConfig, validate
from zapreply.rules.options import Options
from zapreply.settings import load
from zapreply.storage.models import Message

AUDIO = json.loads((FIXTURES / "message_audio.json").read_text())
IMAGE = json.loads((FIXTURES / "message_image.json").read_text())
IMAGE_S3 = json.loads((FIXTURES / "message_image_s3.json").read_text())


def read(envelope: dict[str, Any], **kwargs: Any) -> wuzapi.InboundMessage:
    message = wuzapi.read_message(wuzapi.parse_envelope(JSON, compact(envelope)), **kwargs)
    assert isinstance(message, wuzapi.InboundMessage)
    return message


# --- the reference the receiver passes on ------------------------------------------------------


def test_a_voice_note_carries_its_inline_bytes_and_its_download_keys() -> None:
    keys = AUDIO["event"]["Message"]["audioMessage"]
    assert read(AUDIO).media == {
        "mimetype": "audio/ogg; codecs=opus",
        "file_name": "3A00000000000000F006.ogg",
        "size": 120,
        "seconds": 7,
        "voice": True,
        "base64": AUDIO["base64"],
        "download": {
            "DirectPath": keys["directPath"], "MediaKey": keys["mediaKey"],
            "Mimetype": "audio/ogg; codecs=opus", "FileEncSHA256": keys["fileEncSHA256"],
            "FileSHA256": keys["fileSHA256"], "FileLength": 120,
        },
    }


def test_an_s3_delivery_carries_the_url_and_no_inline_bytes() -> None:
    reference = read(IMAGE_S3).media
    assert reference["url"] == IMAGE_S3["s3"]["url"]
    assert "base64" not in reference
    assert reference["mimetype"] == "image/jpeg"
    assert reference["download"]["DirectPath"].startswith("/o1/v/t24/")


def test_inline_bytes_over_the_limit_are_left_for_the_worker_to_fetch() -> None:
    reference = read(IMAGE, inline_media_limit=10).media
    assert "base64" not in reference
    assert reference["inline_dropped"] == len(IMAGE["base64"])
    assert reference["download"]  # the worker's way to the bytes


@pytest.mark.parametrize("inline", ["T2dn\x00UwAC", "T2dnUwAC\u00e9"])
def test_inline_bytes_that_cannot_be_base64_are_not_passed_on(inline: str) -> None:
    envelope = copy.deepcopy(AUDIO)
    envelope["base64"] = inline
    reference = read(envelope).media
    assert "base64" not in reference and reference["download"]


def test_a_url_that_is_not_http_is_not_passed_on() -> None:
    envelope = copy.deepcopy(IMAGE_S3)
    envelope["s3"]["url"] = "file:///etc/passwd"
    assert "url" not in read(envelope).media


def test_overlong_keys_are_not_passed_on() -> None:
    envelope = copy.deepcopy(IMAGE)
    envelope["event"]["Message"]["imageMessage"]["mediaKey"] = "A" * 10_000
    download = read(envelope).media["download"]
    assert "MediaKey" not in download and download["DirectPath"]


def test_the_url_of_a_media_message_is_not_passed_on_for_the_download_endpoint() -> None:
    envelope = copy.deepcopy(IMAGE)
    envelope["event"]["Message"]["imageMessage"]["URL"] = "http://169.254.169.254/latest/"
    download = read(envelope).media["download"]
    assert "Url" not in download and "169.254" not in json.dumps(download)
    envelope["event"]["Message"]["imageMessage"].pop("directPath")
    assert "download" not in read(envelope).media  # nothing WuzAPI could fetch it by


def test_a_document_with_a_caption_is_read_from_its_inner_message() -> None:
    envelope = copy.deepcopy(IMAGE)
    for key in ("base64", "mimeType", "fileName"):
        envelope.pop(key)
    envelope["event"]["Message"] = {"documentWithCaptionMessage": {"message": {
        "documentMessage": {"caption": "o orçamento", "fileName": "orcamento.pdf",
                            "mimetype": "application/pdf", "directPath": "/v/doc",
                            "fileLength": 2048},
    }}}
    message = read(envelope)
    assert (message.text, message.media_type) == ("o orçamento", "document")
    assert message.media == {
        "mimetype": "application/pdf", "file_name": "orcamento.pdf", "size": 2048,
        "download": {"DirectPath": "/v/doc", "Mimetype": "application/pdf", "FileLength": 2048},
    }


def test_text_and_media_the_business_sent_carry_no_reference() -> None:
    assert read(json.loads((FIXTURES / "message_text.json").read_text())).media is None
    envelope = copy.deepcopy(AUDIO)
    envelope["event"]["Info"]["IsFromMe"] = True
    assert read(envelope).media is None


def test_the_receiver_queues_the_reference_within_its_inline_limit(client_with) -> None:  # noqa: F811
    from tests.webhook_app.test_webhooks import post, queued_messages

    make_config()
    client = client_with(MEDIA_INLINE_MAX_BYTES=str(len(AUDIO["base64"])))
    assert post(client, compact(AUDIO), JSON).get_json()["status"] == "queued"
    bigger = copy.deepcopy(AUDIO)
    bigger["event"]["Info"]["ID"] = "3A0000000000000000B2"
    bigger["base64"] += "AAAA"
    assert post(client, compact(bigger), JSON).get_json()["status"] == "queued"

    [(task, first), (_, second)] = queued_messages()
    assert task == HANDLE_INBOUND
    assert first["message"]["media"]["base64"] == AUDIO["base64"]
    assert "base64" not in second["message"]["media"]
    assert second["message"]["media"]["download"]["MediaKey"]


# --- how media reads to the model --------------------------------------------------------------


def row(media_type: str, content: str = "", **reference: Any) -> Message:
    return Message(role="customer", media_type=media_type, content=content,
                   extra={"media": reference})


@pytest.mark.parametrize(("message", "text"), [
    (row("image", "Segue a foto"), "[image] Segue a foto"),
    (row("image"), "[image]"),
    (row("audio", voice=True), "[voice note]"),
    (row("audio"), "[audio]"),
    (row("audio", "quanto custa?", voice=True, transcribed=True), "quanto custa?"),
    (row("audio", voice=True, transcribed=True), "[voice note without speech]"),
    (row("audio", voice=True, failed="timeout"), "[voice note that could not be transcribed]"),
    (row("document", "o orçamento", file_name="orcamento.pdf"),
     "[document: orcamento.pdf] o orçamento"),
    (row("sticker"), "[sticker]"),
])
def test_media_reads_as_a_label_and_its_caption(message: Message, text: str) -> None:
    assert media.describe(message) == text


@pytest.mark.parametrize(("options", "model", "action"), [
    ({"vision": "auto"}, "openai/gpt-4o-mini", "attach"),
    ({"vision": "auto"}, "openai/unknown-model", None),
    ({"vision": "always"}, "openai/unknown-model", "attach"),
    ({"vision": "never"}, "openai/gpt-4o-mini", None),
])
def test_images_go_as_pictures_only_to_models_that_take_them(
    options: dict[str, Any], model: str, action: str | None
) -> None:
    assert media.Item.of(row("image", "foto"), 1, Options.of(options), model).action == action


def test_audio_is_transcribed_once_and_not_after_it_failed() -> None:
    options = Options(transcribe_audio=True)
    assert media.Item.of(row("audio"), 1, options, "m").action == "transcribe"
    assert media.Item.of(row("audio", "oi", transcribed=True), 1, options, "m").action is None
    assert media.Item.of(row("audio", failed="x"), 1, options, "m").action is None
    assert media.Item.of(row("audio"), 1, Options(transcribe_audio=False), "m").action is None


# --- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "mimetype"), [
    (base64.b64encode(b"OggS-bytes").decode(), None),
    ("data:audio/ogg; codecs=opus;base64," + base64.b64encode(b"OggS-bytes").decode(),
     "audio/ogg; codecs=opus"),
    (base64.b64encode(b"OggS-bytes").decode().rstrip("="), None),
])
def test_base64_and_data_urls_decode(value: str, mimetype: str | None) -> None:
    assert media._decode(value) == (b"OggS-bytes", mimetype)


@pytest.mark.parametrize("value", ["data:text/plain,hello", "@@@not base64@@@!"])
def test_what_is_not_base64_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        media._decode(value)


@pytest.mark.parametrize(("reference", "mimetype", "name"), [
    ({"file_name": "3A06.ogg"}, "audio/ogg; codecs=opus", "3A06.ogg"),
    ({}, "audio/ogg; codecs=opus", "audio.ogg"),
    ({}, "audio/mpeg", "audio.mp3"),
    ({"file_name": "no-extension"}, "audio/mp4", "audio.m4a"),
])
def test_the_transcription_file_name_tells_the_format(
    reference: dict[str, Any], mimetype: str, name: str
) -> None:
    assert media._audio_file_name(reference, mimetype) == name


# --- failures that need no network ---------------------------------------------------------------


def test_without_inline_bytes_livchat_has_no_way_to_the_media() -> None:
    reference = read(IMAGE, inline_media_limit=0).media
    with pytest.raises(media.MediaFailed) as failed:
        media.fetch(reference, "image", {"driver": "livchat", "base_url": "http://x"}, load({}))
    assert failed.value.permanent


def test_media_over_the_size_limit_is_not_fetched() -> None:
    reference = {**read(IMAGE, inline_media_limit=0).media, "size": 10_000}
    with pytest.raises(media.MediaFailed, match="MEDIA_MAX_BYTES") as failed:
        media.fetch(reference, "image", {"driver": "wuzapi", "base_url": "http://127.0.0.1:9",
                                         "token": "t"}, load({"MEDIA_MAX_BYTES": "1000"}))
    assert failed.value.permanent


def test_transcription_errors_say_whether_a_retry_can_help() -> None:
    from zapreply.llm import chat as llm

    class StatusError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"status {status}")
            self.status_code = status

    assert llm._is_permanent(StatusError(400)) and llm._is_permanent(StatusError(401))
    assert not llm._is_permanent(StatusError(429))
    assert not llm._is_permanent(StatusError(503))
    assert not llm._is_permanent(TimeoutError("read timed out"))


# --- options -----------------------------------------------------------------------------------


def config(**options: Any) -> dict[str, Any]:
    return {"name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
            "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
            "options": options}


def test_the_media_options_validate() -> None:
    values = validate(config(transcribe_audio=False, transcription_model="groq/whisper-large-v3",
                             transcription_language="pt", vision="never",
                             media_fallback_text="Pode escrever?"))
    assert values["options"]["vision"] == "never"


@pytest.mark.parametrize(("options", "message"), [
    ({"vision": True}, "wrong type"),
    ({"vision": "sometimes"}, "must be one of: auto, always, never"),
    ({"transcription_model": "  "}, "must not be empty"),
    ({"transcribe_audio": "yes"}, "wrong type"),
    ({"media_fallback_text": 3}, "wrong type"),
])
def test_bad_media_options_are_refused_with_a_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        validate(config(**options))


# --- inline bytes are not kept for messages that are never answered ------------------------------


def record_image(config_id: int, wa_id: str) -> int:
    from zapreply.replies import inbound
    from zapreply.storage.db import session_scope

    message = read(IMAGE).as_payload()
    message["wa_message_id"] = wa_id
    message["timestamp"] = datetime.now(UTC).isoformat()  # not a backlog
    with session_scope() as session:
        return inbound.record_inbound(session, config_id=config_id, instance="loja-teste",
                                      message=message).conversation_id


def stored_media(wa_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from zapreply.storage.db import session_scope

    with session_scope() as session:
        return session.scalars(select(Message).where(Message.wa_message_id == wa_id)).one() \
            .extra["media"]


def test_a_message_set_aside_drops_its_inline_bytes(db) -> None:
    from zapreply.storage.db import session_scope
    from zapreply.storage.models import WorkflowConfig

    config_id = make_config()
    with session_scope() as session:
        session.get(WorkflowConfig, config_id).options = {
            "trigger": "keyword", "trigger_keywords": ["pedido"]}
    record_image(config_id, "IMG-ASIDE")
    assert "base64" not in stored_media("IMG-ASIDE")
    assert stored_media("IMG-ASIDE")["download"]


def test_a_message_of_a_paused_conversation_drops_its_inline_bytes(db) -> None:
    from zapreply.replies import responder
    from zapreply.rules import conversations
    from zapreply.storage.db import session_scope
    from zapreply.storage.models import Conversation

    config_id = make_config()
    conversation_id = record_image(config_id, "IMG-1")
    assert stored_media("IMG-1")["base64"] == IMAGE["base64"]  # waiting for its answer
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id)
        conversations.pause(session, conversation, reason="operator", until=None,
                            actor="operator")
    responder.answer_conversation(conversation_id, owner="test")
    assert "base64" not in stored_media("IMG-1")


# --- where media may be fetched from -------------------------------------------------------------


def hosts(value: str) -> tuple:
    return load({"MEDIA_ALLOWED_HOSTS": value}).media_allowed_hosts


@pytest.mark.parametrize(("url", "listed", "allowed"), [
    ("https://mmg.whatsapp.net/v/t62/x.enc", "*.whatsapp.net,*.amazonaws.com", False),
    ("https://media-gru1-1.cdn.whatsapp.net/x", "*.whatsapp.net", False),
    ("https://loja.s3.sa-east-1.amazonaws.com/img.jpg?X-Amz-Signature=a", "*.amazonaws.com",
     False),
    ("https://MMG.WhatsApp.NET./x", "mmg.whatsapp.net", False),
    ("https://whatsapp.net/x", "*.whatsapp.net", None),
    ("https://evilwhatsapp.net/x", "*.whatsapp.net", None),
    ("https://mmg.whatsapp.net.evil.example/x", "*.whatsapp.net", None),
    ("https://mmg.whatsapp.net@evil.example/x", "*.whatsapp.net", None),
    ("http://mmg.whatsapp.net/x", "*.whatsapp.net", None),
    ("https://mmg.whatsapp.net:8443/x", "*.whatsapp.net", None),
    ("https://media.local:8443/x", "media.local:8443", False),
    ("http://127.0.0.1:9000/bucket/img.jpg", "http://127.0.0.1:9000", True),
    ("http://127.0.0.1:9001/bucket/img.jpg", "http://127.0.0.1:9000", None),
    ("https://127.0.0.1:9000/bucket/img.jpg", "http://127.0.0.1:9000", None),
    ("http://minio/bucket/img.jpg", "http://minio", True),
    ("https://[::1]:9/x", "https://[::1]:9", True),
    ("http://169.254.169.254/latest/meta-data/", "*.whatsapp.net,*.amazonaws.com", None),
    ("not a url", "*.whatsapp.net", None),
])
def test_a_url_is_fetched_only_from_the_allowed_hosts(url: str, listed: str,
                                                       allowed: bool | None) -> None:
    assert media.allowed_origin(url, hosts(listed)) is allowed


@pytest.mark.parametrize("value", ["ftp://media.example", "http://*.example", "a*.example",
                                   "*", "*.", "media.example/path", "https://u@media.example",
                                   "media.example:port"])
def test_a_malformed_allowed_host_stops_the_process_at_start(value: str) -> None:
    from zapreply.settings import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="MEDIA_ALLOWED_HOSTS"):
        hosts(value)


@pytest.fixture
def internal():  # type: ignore[no-untyped-def]
    """A server on loopback standing for something internal: it counts every connection."""
    from tests.zapreply.net.test_egress import OK, Server

    server = Server(OK)
    yield server
    server.close()


WUZAPI = {"driver": "wuzapi", "base_url": "http://127.0.0.1:9", "token": "t"}


def test_a_url_off_the_allowed_hosts_is_never_fetched(internal) -> None:  # type: ignore[no-untyped-def]
    reference = {"url": f"http://127.0.0.1:{internal.port}/internal"}
    with pytest.raises(media.MediaFailed, match="MEDIA_ALLOWED_HOSTS") as failed:
        media.fetch(reference, "image", WUZAPI, load({}))
    assert failed.value.permanent
    assert internal.connections == 0


def test_an_allowed_host_that_resolves_to_loopback_is_refused_when_connecting(internal) -> None:  # type: ignore[no-untyped-def]
    settings = load({"MEDIA_ALLOWED_HOSTS": f"localhost:{internal.port}"})
    reference = {"url": f"https://localhost:{internal.port}/internal"}
    with pytest.raises(media.MediaFailed, match="private or local address") as failed:
        media.fetch(reference, "image", WUZAPI, settings)
    assert failed.value.permanent
    assert internal.connections == 0


def test_an_origin_listed_with_its_scheme_is_fetched(internal) -> None:  # type: ignore[no-untyped-def]
    settings = load({"MEDIA_ALLOWED_HOSTS": f"http://127.0.0.1:{internal.port}"})
    reference = {"url": f"http://127.0.0.1:{internal.port}/bucket/img.jpg", "mimetype": "x/y"}
    assert media.fetch(reference, "image", WUZAPI, settings) == (b"hello", "x/y", "s3")


def test_a_redirect_from_an_allowed_host_is_not_followed(internal) -> None:  # type: ignore[no-untyped-def]
    from tests.zapreply.net.test_egress import Server

    redirect = Server(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:"
                      f"{internal.port}/internal\r\nContent-Length: 0\r\n\r\n".encode())
    try:
        settings = load({"MEDIA_ALLOWED_HOSTS": f"http://127.0.0.1:{redirect.port}"})
        with pytest.raises(media.MediaFailed, match="answered 307") as failed:
            media.fetch({"url": f"http://127.0.0.1:{redirect.port}/img.jpg"}, "image",
                        WUZAPI, settings)
    finally:
        redirect.close()
    assert failed.value.permanent
    assert internal.connections == 0


def test_media_declared_larger_than_the_limit_is_not_read() -> None:
    from tests.zapreply.net.test_egress import Server

    big = Server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100)
    try:
        settings = load({"MEDIA_ALLOWED_HOSTS": f"http://127.0.0.1:{big.port}",
                         "MEDIA_MAX_BYTES": "1000"})
        with pytest.raises(media.MediaFailed, match="over MEDIA_MAX_BYTES") as failed:
            media.fetch({"url": f"http://127.0.0.1:{big.port}/img.jpg"}, "image", WUZAPI,
                        settings)
    finally:
        big.close()
    assert failed.value.permanent


def test_without_time_left_in_the_run_the_media_is_not_fetched(internal) -> None:  # type: ignore[no-untyped-def]
    import time

    settings = load({"MEDIA_ALLOWED_HOSTS": f"http://127.0.0.1:{internal.port}"})
    with pytest.raises(media.MediaFailed, match="no time left") as failed:
        media.fetch({"url": f"http://127.0.0.1:{internal.port}/img.jpg"}, "image", WUZAPI,
                    settings, deadline=time.monotonic() - 1)
    assert not failed.value.permanent  # a later attempt of the run may have the time
    assert internal.connections == 0


def test_the_download_endpoint_is_sent_the_media_keys_and_never_a_url() -> None:
    from tests.stubs import MessagesStub

    wuzapi_stub = MessagesStub().start()
    try:
        wuzapi_stub.media["/v/t62/abc"] = (b"OggS-bytes", "audio/ogg")
        # A reference stored before URLs were dropped at the receiver still carries one.
        reference = {"download": {"Url": "http://169.254.169.254/latest/meta-data/",
                                  "url": "http://127.0.0.1:1/", "DirectPath": "/v/t62/abc",
                                  "MediaKey": "a2V5", "FileLength": 10, "Extra": "x"}}
        send = {"driver": "wuzapi", "base_url": wuzapi_stub.url, "token": "t"}
        data, mimetype, source = media.fetch(reference, "audio", send, load({}))
    finally:
        wuzapi_stub.stop()
    assert (data, mimetype, source) == (b"OggS-bytes", "audio/ogg", "download")
    [download] = wuzapi_stub.downloads
    assert download["body"] == {"DirectPath": "/v/t62/abc", "MediaKey": "a2V5", "FileLength": 10}


def test_an_answer_of_the_download_endpoint_over_the_limit_is_refused() -> None:
    from tests.stubs import MessagesStub

    wuzapi_stub = MessagesStub().start()
    try:
        wuzapi_stub.media["/v/big"] = (b"x" * 3000, "audio/ogg")
        send = {"driver": "wuzapi", "base_url": wuzapi_stub.url, "token": "t"}
        with pytest.raises(media.MediaFailed, match="over MEDIA_MAX_BYTES") as failed:
            media.fetch({"download": {"DirectPath": "/v/big"}}, "audio", send,
                        load({"MEDIA_MAX_BYTES": "1000"}))
    finally:
        wuzapi_stub.stop()
    assert failed.value.permanent


def test_the_run_s_deadline_cuts_a_download_shorter_than_media_timeout_seconds() -> None:
    import socket
    import time

    from tests.zapreply.net.test_egress import Server

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(300):
            conn.sendall(b"x")
            time.sleep(0.2)

    slow = Server(drip)
    settings = load({"MEDIA_ALLOWED_HOSTS": f"http://127.0.0.1:{slow.port}",
                     "MEDIA_TIMEOUT_SECONDS": "60"})
    item = media.Item(message_id=1, index=0, media_type="image", action="attach",
                      reference={"url": f"http://127.0.0.1:{slow.port}/img.jpg"})
    started = time.monotonic()
    try:
        with pytest.raises(media.MediaFailed, match="timeout fetching the S3 URL") as failed:
            media.resolve([{"role": "user", "content": ""}], [item], options=Options(), send=WUZAPI,
                          settings=settings, conversation_id=1, run_id=1,
                          deadline=time.monotonic() + 1.0)
    finally:
        slow.close()
    assert 0.9 <= time.monotonic() - started < 1.6
    assert not failed.value.permanent and failed.value.message_id == 1


def test_a_transcription_without_time_left_in_the_run_is_not_started(monkeypatch) -> None:
    import time

    from zapreply.llm import chat as llm

    called = []
    monkeypatch.setattr(llm, "transcribe", lambda **kwargs: called.append(kwargs))
    item = media.Item(message_id=1, index=0, media_type="audio", action="transcribe",
                      reference={"base64": base64.b64encode(b"OggS-bytes").decode()})
    with pytest.raises(media.MediaFailed, match="no time left in this reply to transcribe") \
            as failed:
        media.resolve([{"role": "user", "content": ""}], [item],
                      options=Options(transcribe_audio=True), send=WUZAPI, settings=load({}),
                      conversation_id=1, run_id=1, deadline=time.monotonic() - 1)
    assert not failed.value.permanent
    assert called == []
