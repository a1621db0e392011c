"""Media end to end: voice notes, images and other media posted to the running receiver as
WuzAPI delivers them (inline base64, an S3 URL, or neither), answered by a real worker that
transcribes through litellm against the LLM stand-in and fetches media over HTTP."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import JPEG_THUMBNAIL, fixture_json, running_worker
from tests.e2e import events_of, post, wait_for, wait_for_event
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Message

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

CUSTOMER = "5511900000001@s.whatsapp.net"
FALLBACK = "Ainda não consigo abrir esse tipo de arquivo. Pode escrever sua dúvida?"
AUDIO_MIME = "audio/ogg; codecs=opus"


@pytest.fixture(scope="module")
def worker_process(migrated: str, base_env: dict[str, str], tmp_path_factory,
                   wuzapi) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The worker as in conftest, with retries fast and few enough to run out in a test, and
    the WuzAPI stand-in's origin allowed to serve media as an S3 bucket would."""
    with running_worker(base_env, tmp_path_factory, "test-media", RETRY_BASE_SECONDS="0.1",
                        RETRY_MAX_SECONDS="0.3", LLM_MAX_ATTEMPTS="3",
                        MEDIA_ALLOWED_HOSTS=wuzapi.url):
        yield


def envelope(name: str) -> dict[str, Any]:
    body = fixture_json(name)
    body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    return body


def send(receiver: str, body: dict[str, Any]) -> None:
    response = post(receiver, json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"


def customer_says(receiver: str, text: str) -> None:
    body = envelope("message_text.json")
    body["event"]["Message"] = {"conversation": text}
    send(receiver, body)


def replies(wuzapi) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["body"]["Body"] for r in wuzapi.sent()]


def customer_rows() -> list[Message]:
    with session_scope() as session:
        return list(session.scalars(
            select(Message).where(Message.role == "customer").order_by(Message.id)))


def audio_without_inline_media(wuzapi, data: bytes) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """message_audio as WuzAPI posts it when it did not attach the bytes; the WuzAPI stand-in
    holds them for its download endpoint."""
    body = envelope("message_audio.json")
    for key in ("base64", "mimeType", "fileName"):
        body.pop(key)
    wuzapi.media[body["event"]["Message"]["audioMessage"]["directPath"]] = (data, AUDIO_MIME)
    return body


# --- voice notes -------------------------------------------------------------------------------


def test_a_voice_note_is_transcribed_answered_and_kept_in_the_history(db, receiver, llm, wuzapi):
    make_config(wuzapi.url)
    llm.transcript = "Quanto custa o frete para Campinas?"
    body = envelope("message_audio.json")

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: Quanto custa o frete para Campinas?"]
    [transcription] = llm.transcriptions
    assert transcription["path"] == "/v1/audio/transcriptions"
    assert transcription["fields"]["model"] == "whisper-1"
    assert transcription["file"]["content"] == base64.b64decode(body["base64"])
    assert transcription["file"]["filename"].endswith(".ogg")
    assert wuzapi.downloads == []  # the inline bytes were enough
    [transcribed] = events_of("media.transcribed")
    assert transcribed.payload["source"] == "base64"
    assert transcribed.payload["model"] == "whisper-1"
    assert transcribed.payload["seconds"] == 7.0
    assert transcribed.payload["cost"] > 0  # litellm prices whisper-1 by the minute
    [row] = customer_rows()
    assert row.content == "Quanto custa o frete para Campinas?"
    assert row.extra["media"]["transcribed"] is True
    assert "base64" not in row.extra["media"]  # not kept once transcribed

    customer_says(receiver, "e em quantos dias chega?")
    wuzapi.wait_for(lambda r: len(r) >= 2)

    # The transcript is part of the history; the voice note is not transcribed again.
    history = llm.chat_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "Quanto custa o frete para Campinas?", "e em quantos dias chega?",
    ]
    assert len(llm.transcriptions) == 1


def test_a_voice_note_without_inline_bytes_is_fetched_from_wuzapi(db, receiver, llm, wuzapi):
    make_config(wuzapi.url)
    audio = b"OggS\x00\x02" + os.urandom(300)
    body = audio_without_inline_media(wuzapi, audio)

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: Transcrição do áudio"]
    [download] = wuzapi.downloads
    keys = body["event"]["Message"]["audioMessage"]
    assert download["path"] == "/chat/downloadaudio"
    assert download["headers"]["Token"] == "secret-user-token"
    assert download["body"] == {
        "DirectPath": keys["directPath"], "MediaKey": keys["mediaKey"],
        "Mimetype": keys["mimetype"], "FileEncSHA256": keys["fileEncSHA256"],
        "FileSHA256": keys["fileSHA256"], "FileLength": keys["fileLength"],
    }
    assert llm.transcriptions[0]["file"]["content"] == audio
    assert events_of("media.transcribed")[0].payload["source"] == "download"


def test_a_webhook_with_large_inline_media_is_accepted_and_the_bytes_fetched_later(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url)
    audio = b"OggS" + os.urandom(3 * 1024 * 1024)  # over the 2 MiB carried in the task
    body = audio_without_inline_media(wuzapi, audio)
    body["base64"] = base64.b64encode(audio).decode()

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: Transcrição do áudio"]
    assert [d["path"] for d in wuzapi.downloads] == ["/chat/downloadaudio"]
    assert llm.transcriptions[0]["file"]["content"] == audio
    [row] = customer_rows()
    assert row.extra["media"]["inline_dropped"] == len(body["base64"])


def test_a_transcription_that_fails_once_is_retried(db, receiver, llm, wuzapi):
    make_config(wuzapi.url)
    llm.transcription_failures = [503]

    send(receiver, envelope("message_audio.json"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: Transcrição do áudio"]
    assert [t["status"] for t in llm.transcriptions] == [503, None]
    [failed] = events_of("media.failed")
    assert failed.payload["will_retry"] is True and failed.payload["permanent"] is False


def test_when_transcription_keeps_failing_the_customer_gets_the_fallback_not_the_error(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url, options={"media_fallback_text": FALLBACK})
    llm.transcription_failures = [503] * 10

    send(receiver, envelope("message_audio.json"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    wait_for_event("message.sent")
    assert replies(wuzapi) == [FALLBACK]
    assert len(llm.transcriptions) == 3  # LLM_MAX_ATTEMPTS of this worker
    assert llm.chat_requests() == []  # nothing the model could understand: not asked
    assert [e.payload["will_retry"] for e in events_of("media.failed")] == [True, True, False]
    assert events_of("media.fallback")
    [row] = customer_rows()
    assert "503" in row.extra["media"]["failed"]


def test_without_a_fallback_text_the_model_hears_that_the_voice_note_was_not_understood(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url)
    llm.transcription_failures = [400]  # permanent: not retried

    send(receiver, envelope("message_audio.json"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: [voice note that could not be transcribed]"]
    assert len(llm.transcriptions) == 1


# --- images ------------------------------------------------------------------------------------


def test_an_image_from_s3_reaches_a_vision_model_as_a_picture(db, receiver, llm, wuzapi):
    make_config(wuzapi.url, model="openai/gpt-4o-mini")  # litellm knows it takes images
    picture = b"\xff\xd8\xff\xe0" + os.urandom(500)
    body = envelope("message_image_s3.json")
    body["s3"]["url"] = f"{wuzapi.url}/s3/{body['s3']['key']}"
    wuzapi.media[f"/s3/{body['s3']['key']}"] = (picture, "image/jpeg")

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: Segue a foto do produto <image>"]
    assert [d["method"] for d in wuzapi.downloads] == ["GET"]
    user = llm.chat_requests()[0]["body"]["messages"][-1]
    assert user["content"] == [
        {"type": "text", "text": "Segue a foto do produto"},
        {"type": "image_url",
         "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(picture).decode()}},
    ]

    customer_says(receiver, "tem em azul?")
    wuzapi.wait_for(lambda r: len(r) >= 2)
    # On later turns the picture is described, not sent again.
    history = llm.chat_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "[image] Segue a foto do produto", "tem em azul?",
    ]
    assert len(wuzapi.downloads) == 1


def test_an_inline_image_is_described_to_a_model_without_vision(db, receiver, llm, wuzapi):
    make_config(wuzapi.url)  # openai/stub-model: litellm does not know it to take images

    send(receiver, envelope("message_image.json"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert replies(wuzapi) == ["Resposta: [image] Segue a foto do produto"]
    [row] = customer_rows()
    assert "base64" not in row.extra["media"]  # answered: the bytes are not kept


def test_an_images_thumbnail_outlives_its_answered_bytes_for_the_console(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url)
    body = envelope("message_image.json")
    body["event"]["Message"]["imageMessage"]["JPEGThumbnail"] = JPEG_THUMBNAIL

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    [row] = customer_rows()
    assert "base64" not in row.extra["media"]
    assert row.extra["media"]["thumbnail"] == JPEG_THUMBNAIL
    # The model never sees it: a description, as without a thumbnail.
    assert replies(wuzapi) == ["Resposta: [image] Segue a foto do produto"]


def test_vision_always_sends_the_picture_to_a_model_litellm_does_not_know(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url, options={"vision": "always"})
    body = envelope("message_image.json")

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    part = llm.chat_requests()[0]["body"]["messages"][-1]["content"][-1]
    assert part["image_url"]["url"] == f"data:image/jpeg;base64,{body['base64']}"


# --- other media -------------------------------------------------------------------------------


def document_envelope() -> dict[str, Any]:
    body = envelope("message_image.json")
    for key in ("base64", "mimeType", "fileName"):
        body.pop(key)
    image = body["event"]["Message"].pop("imageMessage")
    document = {key: image[key] for key in (
        "URL", "directPath", "fileEncSHA256", "fileSHA256", "mediaKey", "mediaKeyTimestamp")}
    document.update(mimetype="application/pdf", fileName="orcamento.pdf", fileLength=2048)
    body["event"]["Message"] = {"documentMessage": document}
    body["event"]["Info"]["MediaType"] = "document"
    return body


def test_a_document_gets_the_fallback_text_without_asking_the_model(db, receiver, llm, wuzapi):
    make_config(wuzapi.url, options={"media_fallback_text": FALLBACK})

    send(receiver, document_envelope())

    wuzapi.wait_for(lambda r: len(r) >= 1)
    wait_for(lambda: bool(events_of("message.sent")))
    assert replies(wuzapi) == [FALLBACK]
    assert llm.chat_requests() == []
    assert wuzapi.downloads == []
    [fallback] = events_of("media.fallback")
    assert fallback.payload["media_types"] == ["document"]


def test_a_document_with_a_text_in_the_same_burst_is_answered_by_the_model(
    db, receiver, llm, wuzapi
):
    make_config(wuzapi.url, debounce_seconds=1.0, options={"media_fallback_text": FALLBACK})

    document = document_envelope()
    document["event"]["Info"]["Timestamp"] = (
        datetime.now(UTC) + timedelta(seconds=2)).isoformat(timespec="seconds")
    send(receiver, document)
    customer_says(receiver, "segue o orçamento")

    wuzapi.wait_for(lambda r: len(r) >= 1)
    # In the order typed (the document's timestamp is the later one).
    assert replies(wuzapi) == ["Resposta: segue o orçamento | [document: orcamento.pdf]"]
    assert events_of("media.fallback") == []


def test_with_livchat_media_it_cannot_fetch_gets_the_fallback_text(db, receiver, llm, wuzapi):
    make_config(wuzapi.url, send={"driver": "livchat", "base_url": wuzapi.url, "token": "lc"},
                options={"media_fallback_text": FALLBACK})
    body = audio_without_inline_media(wuzapi, b"OggS")  # LivChat has no download endpoint

    send(receiver, body)

    sent = wuzapi.wait_for(lambda r: len(r) >= 1)
    assert [r["body"]["message"] for r in sent] == [FALLBACK]
    assert wuzapi.downloads == [] and llm.transcriptions == [] and llm.chat_requests() == []
    [failed] = events_of("media.failed")
    assert failed.payload["permanent"] is True and failed.payload["will_retry"] is False
