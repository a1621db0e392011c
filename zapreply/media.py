"""Media in a conversation: voice notes transcribed, images shown to the model, the rest
described (or answered with the config's fallback text).

The receiver passes on a bounded *reference* to a media message's bytes
(zapreply.wuzapi.media_reference: inline base64 up to MEDIA_INLINE_MAX_BYTES, the S3 URL, the
keys of WuzAPI's download endpoints); it is kept in the message's `extra["media"]`. When a run
answers a burst, the responder renders each message with `describe` and notes with `Item` what
the burst's media need; `resolve` then does that work, outside any transaction, under the lease:

- audio is transcribed once: the transcript becomes the message's content, so the history,
  later turns and the admin API see it and it is never transcribed (nor paid for) again;
- images go to the model as image_url parts (data: URLs) only for the burst being answered; on
  later turns an image is "[image] <caption>" — re-sending every picture on every turn would
  multiply the cost of a conversation;
- anything else, and media that cannot be fetched or transcribed, is described, e.g.
  "[document: nota.pdf]". When nothing in the burst can be understood and the config has a
  `media_fallback_text`, that text is the reply and the model is not asked.

A failure a retry can fix (a timeout, a 5xx) is retried with the run's backoff, up to
LLM_MAX_ATTEMPTS attempts per message; after that, or after a permanent failure, the message
counts as not understood (event `media.failed`). Inline bytes are dropped from the row once the
message has been answered (or transcribed), so the history query stays small.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply import budget, events
from zapreply.db import session_scope
from zapreply.http import per_shard_limit, shared_client, ssl_context
from zapreply.models import Message, ReplyRun, utcnow
from zapreply.settings import Settings
from zapreply.wuzapi import storable

# WuzAPI's download endpoint per media type (POST, header Token, body: the media keys).
_DOWNLOAD_PATHS = {
    "image": "/chat/downloadimage",
    "audio": "/chat/downloadaudio",
    "video": "/chat/downloadvideo",
    "document": "/chat/downloaddocument",
}
# The transcription API tells the format by the file name's extension.
_AUDIO_EXTENSIONS = {
    "audio/ogg": "ogg", "application/ogg": "ogg", "audio/opus": "ogg", "audio/mpeg": "mp3",
    "audio/mp3": "mp3", "audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a",
    "audio/aac": "m4a", "audio/wav": "wav", "audio/x-wav": "wav", "audio/webm": "webm",
    "audio/flac": "flac",
}


class MediaFailed(Exception):
    """A media message's bytes or transcript could not be had; `permanent` says whether a
    retry can help."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.message_id: int | None = None
        self.media_type: str | None = None


def describe(row: Message) -> str:
    """A media message as text: the transcript of audio, else a label and the caption."""
    reference = (row.extra or {}).get("media") or {}
    if row.media_type == "audio" and reference.get("transcribed") and row.content:
        return row.content
    label = row.media_type or "media"
    if row.media_type == "audio":
        label = "voice note" if reference.get("voice") else "audio"
        if reference.get("transcribed"):
            label += " without speech"
        elif reference.get("failed"):
            label += " that could not be transcribed"
    elif row.media_type == "document" and reference.get("file_name"):
        label = f"document: {reference['file_name']}"
    return f"[{label}] {row.content}" if row.content else f"[{label}]"


@dataclass
class Item:
    """A customer message of the burst being answered: where it sits in the model's messages,
    and what its media still needs ("transcribe", "attach" or None)."""

    message_id: int
    index: int
    media_type: str | None
    action: str | None
    reference: dict[str, Any] = field(default_factory=dict)
    caption: str = ""
    # Whether the model gets something it can read or see from this message.
    understood: bool = False
    # In a group, who wrote it: what the model reads starts with "[label]" (zapreply.groups).
    label: str = ""

    @classmethod
    def of(cls, row: Message, index: int, options: dict[str, Any], model: str,
           label: str = "") -> Item:
        reference = (row.extra or {}).get("media") or {}
        action = None
        if not reference.get("failed"):
            if row.media_type == "audio" and options.get("transcribe_audio") \
                    and not reference.get("transcribed"):
                action = "transcribe"
            elif row.media_type == "image" and _vision(options, model):
                action = "attach"
        return cls(row.id, index, row.media_type, action, reference,
                   caption="" if row.media_type == "audio" else row.content,
                   understood=bool(row.content.strip()), label=label)

    def show(self, messages: list[dict[str, Any]], content: Any) -> None:
        """Put what the model gets from this message in its place, attributed in a group."""
        if self.label and isinstance(content, str):
            content = f"[{self.label}] {content}"
        elif self.label and isinstance(content, list):
            content = [{"type": "text", "text": f"[{self.label}]"}, *content]
        messages[self.index]["content"] = content


def _vision(options: dict[str, Any], model: str) -> bool:
    setting = options.get("vision") or "auto"
    if setting != "auto":
        return setting == "always"
    from zapreply import llm  # only workers import litellm

    return llm.supports_vision(model)


def resolve(
    messages: list[dict[str, Any]], burst: list[Item], *, options: dict[str, Any],
    send: dict[str, Any], settings: Settings, conversation_id: int, run_id: int,
) -> str | None:
    """Do what the burst's media need, in place in `messages`. Return the fallback text to
    send instead of asking the model, or None. Raises MediaFailed (with message_id set)."""
    for item in burst:
        if item.action is None:
            continue
        try:
            if item.action == "transcribe":
                _transcribe(messages, item, options, send, settings, conversation_id, run_id)
            else:
                _attach(messages, item, send, settings)
        except MediaFailed as exc:
            exc.message_id, exc.media_type = item.message_id, item.media_type
            raise
    fallback = options.get("media_fallback_text")
    if not fallback or any(item.understood for item in burst) \
            or not any(item.media_type for item in burst):
        return None
    with session_scope() as session:
        events.record(session, events.MEDIA_FALLBACK, conversation_id=conversation_id,
                      run_id=run_id, message_ids=[item.message_id for item in burst],
                      media_types=[item.media_type for item in burst])
    return str(fallback)


def _transcribe(
    messages: list[dict[str, Any]], item: Item, options: dict[str, Any], send: dict[str, Any],
    settings: Settings, conversation_id: int, run_id: int,
) -> None:
    from zapreply.llm import LLMError, transcribe

    audio, mimetype, source = fetch(item.reference, item.media_type, send, settings)
    try:
        transcript = transcribe(
            model=options.get("transcription_model") or "whisper-1", audio=audio,
            file_name=_audio_file_name(item.reference, mimetype), mimetype=mimetype,
            timeout=settings.media_timeout_seconds,
            language=options.get("transcription_language"),
        )
    except LLMError as exc:
        raise MediaFailed(f"transcription: {exc}", permanent=exc.permanent,
                          retry_after=exc.retry_after) from exc
    text = storable(transcript.text.strip())
    limit = options.get("max_input_chars")
    with session_scope() as session:
        row = session.get(Message, item.message_id)
        extra = dict(row.extra or {})
        if limit and len(text) > limit:
            extra["truncated_from"] = len(text)
            text = text[:limit]
        reference = {k: v for k, v in (extra.get("media") or {}).items() if k != "base64"}
        reference["transcribed"] = True
        extra["media"] = reference
        row.content, row.extra = text, extra
        budget.record_transcription(session, session.get(ReplyRun, run_id).workflow_config_id,
                                    options, transcript.cost, utcnow())
        events.record(session, events.MEDIA_TRANSCRIBED, conversation_id=conversation_id,
                      run_id=run_id, message_id=item.message_id, model=transcript.model,
                      source=source, chars=len(text), seconds=transcript.seconds,
                      cost=transcript.cost, latency_ms=transcript.latency_ms)
        item.show(messages, describe(row))
    item.understood = bool(text)


def _attach(messages: list[dict[str, Any]], item: Item, send: dict[str, Any],
            settings: Settings) -> None:
    data, mimetype, _source = fetch(item.reference, item.media_type, send, settings)
    mimetype = (mimetype or "").split(";", 1)[0].strip().lower()
    if not mimetype.startswith("image/"):
        mimetype = "image/jpeg"
    parts: list[dict[str, Any]] = []
    if item.caption:
        parts.append({"type": "text", "text": item.caption})
    url = f"data:{mimetype};base64,{base64.b64encode(data).decode('ascii')}"
    parts.append({"type": "image_url", "image_url": {"url": url}})
    item.show(messages, parts)
    item.understood = True


def _audio_file_name(reference: dict[str, Any], mimetype: str | None) -> str:
    name = str(reference.get("file_name") or "")
    if "." in name.strip(".") and len(name.rsplit(".", 1)[1]) <= 5:
        return name
    kind = (mimetype or "").split(";", 1)[0].strip().lower()
    return f"audio.{_AUDIO_EXTENSIONS.get(kind, 'ogg')}"


def record_failure(session: Session, exc: MediaFailed, *, conversation_id: int, run_id: int,
                   budget: int) -> int | None:
    """Count a failed attempt on the message's media: the attempt number when a retry may
    help, None when the media is given up on (it is then described as not understood)."""
    row = session.get(Message, exc.message_id)
    extra = dict(row.extra or {})
    reference = dict(extra.get("media") or {})
    attempts = int(reference.get("attempts") or 0) + 1
    gives_up = exc.permanent or attempts >= budget
    reference["attempts"] = attempts
    if gives_up:
        reference["failed"] = str(exc)[:300]
        reference.pop("base64", None)
    extra["media"] = reference
    row.extra = extra
    events.record(session, events.MEDIA_FAILED, conversation_id=conversation_id, run_id=run_id,
                  message_id=exc.message_id, media_type=exc.media_type, error=str(exc)[:300],
                  permanent=exc.permanent, attempt=attempts, will_retry=not gives_up)
    return None if gives_up else attempts


def forget_inline(session: Session, run_id: int) -> None:
    """Drop the inline bytes of the run's messages: they are answered."""
    for row in session.scalars(select(Message).where(
        Message.reply_run_id == run_id, Message.role == "customer",
        Message.media_type.is_not(None),
    )):
        drop_inline(row)


def drop_inline(row: Message) -> None:
    """Drop a message's inline bytes (answered, or set aside without an answer): up to
    MEDIA_INLINE_MAX_BYTES that every later history query would otherwise load again."""
    reference = (row.extra or {}).get("media")
    if isinstance(reference, dict) and "base64" in reference:
        row.extra = {**row.extra,
                     "media": {k: v for k, v in reference.items() if k != "base64"}}


# --- fetching --------------------------------------------------------------------------------


def fetch(reference: dict[str, Any], media_type: str | None, send: dict[str, Any],
          settings: Settings) -> tuple[bytes, str | None, str]:
    """The media's bytes, its MIME type and where they came from: the inline base64, else the
    S3 URL, else WuzAPI's download endpoint (LivChat has none)."""
    mimetype = reference.get("mimetype")
    failures: list[MediaFailed] = []
    inline = reference.get("base64")
    if isinstance(inline, str) and inline:
        try:
            return _decode(inline)[0], mimetype, "base64"
        except ValueError:
            failures.append(MediaFailed("the inline base64 is not valid", permanent=True))
    size = reference.get("size")
    if isinstance(size, int) and size > settings.media_max_bytes:
        raise MediaFailed(f"the media has {size} bytes, over MEDIA_MAX_BYTES", permanent=True)
    if reference.get("url"):
        try:
            return _get(str(reference["url"]), settings), mimetype, "s3"
        except MediaFailed as exc:
            failures.append(exc)
    path = _DOWNLOAD_PATHS.get(media_type or "")
    if reference.get("download") and path and send.get("driver") == "wuzapi":
        try:
            data, declared = _download(send, path, reference["download"], settings)
            return data, declared or mimetype, "download"
        except MediaFailed as exc:
            failures.append(exc)
    if not failures:
        raise MediaFailed("no way to fetch the media: no inline data, no S3 URL and no "
                          "download endpoint for this driver", permanent=True)
    raise MediaFailed("; ".join(str(f) for f in failures),
                      permanent=all(f.permanent for f in failures),
                      retry_after=max((f.retry_after or 0 for f in failures), default=0) or None)


def _http() -> httpx.Client:
    return shared_client("media", lambda: httpx.Client(
        limits=httpx.Limits(max_connections=per_shard_limit(100),
                            max_keepalive_connections=per_shard_limit(20)),
        follow_redirects=True, max_redirects=3, verify=ssl_context(),
    ))


def _get(url: str, settings: Settings) -> bytes:
    # Never the URL in a message: a presigned one carries its signature.
    try:
        with _http().stream("GET", url, timeout=settings.media_timeout_seconds) as response:
            _check_status(response.status_code, "the S3 URL")
            return _read_capped(response, settings.media_max_bytes)
    except httpx.TimeoutException as exc:
        raise MediaFailed("timeout fetching the S3 URL", permanent=False) from exc
    except httpx.HTTPError as exc:
        raise MediaFailed(f"{type(exc).__name__} fetching the S3 URL", permanent=False) from exc


def _download(send: dict[str, Any], path: str, keys: dict[str, Any],
              settings: Settings) -> tuple[bytes, str | None]:
    """WuzAPI's /chat/download*: {"code": 200, "data": {"Data": "data:<mime>;base64,…",
    "Mimetype": …}, "success": true}. WuzAPI answers 500 to every failure (no session, media
    expired, WhatsApp unreachable): counted as retryable, within the attempt budget."""
    url = f"{str(send.get('base_url', '')).rstrip('/')}{path}"
    what = f"WuzAPI {path}"
    # The answer is the media in base64 inside JSON: a third larger than the media itself.
    cap = settings.media_max_bytes * 4 // 3 + 64 * 1024
    try:
        with _http().stream("POST", url, json=keys, headers={"Token": str(send.get("token", ""))},
                            timeout=settings.media_timeout_seconds) as response:
            _check_status(response.status_code, what)
            raw = _read_capped(response, cap)
    except httpx.TimeoutException as exc:
        raise MediaFailed(f"timeout calling {what}", permanent=False) from exc
    except httpx.HTTPError as exc:
        raise MediaFailed(f"{type(exc).__name__} calling {what}", permanent=False) from exc
    try:
        answer = json.loads(raw)
        data = answer["data"]
        data_url, declared = data["Data"], data.get("Mimetype")
        content, from_url = _decode(data_url)
    except (ValueError, KeyError, TypeError):
        raise MediaFailed(f"{what} answered something that is not media", permanent=True) \
            from None
    return content, (declared if isinstance(declared, str) and declared else from_url)


def _check_status(status: int, what: str) -> None:
    if status >= 500 or status in (408, 425, 429):
        raise MediaFailed(f"{what} answered {status}", permanent=False)
    if status >= 300:
        raise MediaFailed(f"{what} answered {status}", permanent=True)


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > cap:
            raise MediaFailed("the media is over MEDIA_MAX_BYTES", permanent=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(value: str) -> tuple[bytes, str | None]:
    """Bytes of base64 or of a base64 data: URL (and the URL's MIME type). ValueError when it
    is neither."""
    mimetype = None
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError("not a base64 data URL")
        mimetype = header[5:-7].strip() or None
    try:
        return base64.b64decode(value, validate=True), mimetype
    except (binascii.Error, ValueError):
        # Some encoders wrap lines or drop the padding.
        cleaned = "".join(value.split())
        try:
            return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4)), mimetype
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not base64") from exc
