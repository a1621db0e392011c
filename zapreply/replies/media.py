"""Media in a conversation: voice notes transcribed, images shown to the model, the rest
described (or answered with the config's fallback text).

The receiver passes on a bounded *reference* to a media message's bytes
(zapreply.channel.wuzapi.media_reference: inline base64 up to MEDIA_INLINE_MAX_BYTES, the S3 URL,
the keys of WuzAPI's download endpoints); it is kept in the message's `extra["media"]`. When a run
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

The webhook says where the bytes are, so whoever can post a webhook could point the worker
anywhere. Hence: a URL is fetched only over https from MEDIA_ALLOWED_HOSTS (or from an origin
listed there with its scheme), only from public addresses unless so listed (checked when the
connection is made, zapreply.net.egress), without following redirects; WuzAPI's download endpoint
(the config's own, set by the admin) is sent the WhatsApp media keys only, never a URL from the
webhook. Every download and transcription ends within MEDIA_TIMEOUT_SECONDS and within the
run's deadline, and no download is read past MEDIA_MAX_BYTES.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.channel.wuzapi import storable
from zapreply.net import egress
from zapreply.net.http import per_shard_limit, shared_client
from zapreply.rules import budget
from zapreply.rules.options import Options
from zapreply.settings import AllowedHost, Settings
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    MediaReference,
    Message,
    MessageExtra,
    ReplyRun,
    Role,
    extra_of,
    utcnow,
)

# WuzAPI's download endpoint per media type (POST, header Token, body: the media keys).
_DOWNLOAD_PATHS = {
    "image": "/chat/downloadimage",
    "audio": "/chat/downloadaudio",
    "video": "/chat/downloadvideo",
    "document": "/chat/downloaddocument",
}
# What those endpoints are sent: the keys whatsmeow needs to fetch the media from WhatsApp by its
# DirectPath. Never a URL: WuzAPI would fetch whatever the webhook named.
_DOWNLOAD_FIELDS = ("DirectPath", "MediaKey", "Mimetype", "FileEncSHA256", "FileSHA256",
                    "FileLength")
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
    reference = extra_of(row).get("media") or {}
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
    # In a group, who wrote it: what the model reads starts with "[label]" (zapreply.rules.groups).
    label: str = ""

    @classmethod
    def of(cls, row: Message, index: int, options: Options, model: str,
           label: str = "") -> Item:
        reference = extra_of(row).get("media") or {}
        action = None
        if not reference.get("failed"):
            if row.media_type == "audio" and options.transcribe_audio \
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


def _vision(options: Options, model: str) -> bool:
    setting = options.vision or "auto"
    if setting != "auto":
        return setting == "always"
    from zapreply.llm import chat as llm  # only workers import litellm

    return llm.supports_vision(model)


def resolve(
    messages: list[dict[str, Any]], burst: list[Item], *, options: Options,
    send: dict[str, Any], settings: Settings, conversation_id: int, run_id: int,
    deadline: float | None = None,
) -> str | None:
    """Do what the burst's media need, in place in `messages`, by `deadline` (the run's, a
    time.monotonic() instant). Return the fallback text to send instead of asking the model,
    or None. Raises MediaFailed (with message_id set)."""
    for item in burst:
        if item.action is None:
            continue
        try:
            if item.action == "transcribe":
                _transcribe(messages, item, options, send, settings, conversation_id, run_id,
                            deadline)
            else:
                _attach(messages, item, send, settings, deadline)
        except MediaFailed as exc:
            exc.message_id, exc.media_type = item.message_id, item.media_type
            raise
    fallback = options.media_fallback_text
    if not fallback or any(item.understood for item in burst) \
            or not any(item.media_type for item in burst):
        return None
    with session_scope() as session:
        events.record(session, EventType.MEDIA_FALLBACK, conversation_id=conversation_id,
                      run_id=run_id, message_ids=[item.message_id for item in burst],
                      media_types=[item.media_type for item in burst])
    return str(fallback)


def _transcribe(
    messages: list[dict[str, Any]], item: Item, options: Options, send: dict[str, Any],
    settings: Settings, conversation_id: int, run_id: int, deadline: float | None,
) -> None:
    from zapreply.llm.chat import LLMError, transcribe

    audio, mimetype, source = fetch(item.reference, item.media_type, send, settings,
                                    deadline=deadline)
    try:
        transcript = transcribe(
            model=options.transcription_model or "whisper-1", audio=audio,
            file_name=_audio_file_name(item.reference, mimetype), mimetype=mimetype,
            timeout=_time_left(_until(settings, deadline), "transcribe the audio"),
            language=options.transcription_language,
        )
    except LLMError as exc:
        raise MediaFailed(f"transcription: {exc}", permanent=exc.permanent,
                          retry_after=exc.retry_after) from exc
    text = storable(transcript.text.strip())
    limit = options.max_input_chars
    with session_scope() as session:
        row = session.get(Message, item.message_id)
        extra: MessageExtra = {**extra_of(row)}
        if limit and len(text) > limit:
            extra["truncated_from"] = len(text)
            text = text[:limit]
        reference: MediaReference = {
            k: v for k, v in (extra.get("media") or {}).items() if k != "base64"}
        reference["transcribed"] = True
        extra["media"] = reference
        row.content, row.extra = text, extra
        budget.record_transcription(session, session.get(ReplyRun, run_id).workflow_config_id,
                                    options, transcript.cost, utcnow())
        events.record(session, EventType.MEDIA_TRANSCRIBED, conversation_id=conversation_id,
                      run_id=run_id, message_id=item.message_id, model=transcript.model,
                      source=source, chars=len(text), seconds=transcript.seconds,
                      cost=transcript.cost, latency_ms=transcript.latency_ms)
        item.show(messages, describe(row))
    item.understood = bool(text)


def _attach(messages: list[dict[str, Any]], item: Item, send: dict[str, Any],
            settings: Settings, deadline: float | None) -> None:
    data, mimetype, _source = fetch(item.reference, item.media_type, send, settings,
                                    deadline=deadline)
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
    extra: MessageExtra = {**extra_of(row)}
    reference: MediaReference = {**(extra.get("media") or {})}
    attempts = int(reference.get("attempts") or 0) + 1
    gives_up = exc.permanent or attempts >= budget
    reference["attempts"] = attempts
    if gives_up:
        reference["failed"] = str(exc)[:300]
        reference.pop("base64", None)
    extra["media"] = reference
    row.extra = extra
    events.record(session, EventType.MEDIA_FAILED, conversation_id=conversation_id, run_id=run_id,
                  message_id=exc.message_id, media_type=exc.media_type, error=str(exc)[:300],
                  permanent=exc.permanent, attempt=attempts, will_retry=not gives_up)
    return None if gives_up else attempts


def forget_inline(session: Session, run_id: int) -> None:
    """Drop the inline bytes of the run's messages: they are answered."""
    for row in session.scalars(select(Message).where(
        Message.reply_run_id == run_id, Message.role == Role.CUSTOMER,
        Message.media_type.is_not(None),
    )):
        drop_inline(row)


def drop_inline(row: Message) -> None:
    """Drop a message's inline bytes (answered, or set aside without an answer): up to
    MEDIA_INLINE_MAX_BYTES that every later history query would otherwise load again."""
    reference = extra_of(row).get("media")
    if isinstance(reference, dict) and "base64" in reference:
        row.extra = {**extra_of(row),
                     "media": {k: v for k, v in reference.items() if k != "base64"}}


# --- fetching --------------------------------------------------------------------------------


def fetch(reference: dict[str, Any], media_type: str | None, send: dict[str, Any],
          settings: Settings, *, deadline: float | None = None) -> tuple[bytes, str | None, str]:
    """The media's bytes, its MIME type and where they came from: the inline base64, else the
    S3 URL, else WuzAPI's download endpoint (LivChat has none). Each download ends within
    MEDIA_TIMEOUT_SECONDS and by `deadline` (time.monotonic()), if given."""
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
            return _get(str(reference["url"]), settings, _until(settings, deadline)), \
                mimetype, "s3"
        except MediaFailed as exc:
            failures.append(exc)
    path = _DOWNLOAD_PATHS.get(media_type or "")
    keys = reference.get("download")
    if isinstance(keys, dict) and keys.get("DirectPath") and path \
            and send.get("driver") == "wuzapi":
        try:
            data, declared = _download(send, path, keys, settings, _until(settings, deadline))
            return data, declared or mimetype, "download"
        except MediaFailed as exc:
            failures.append(exc)
    if not failures:
        raise MediaFailed("no way to fetch the media: no inline data, no S3 URL and no "
                          "download endpoint for this driver", permanent=True)
    raise MediaFailed("; ".join(str(f) for f in failures),
                      permanent=all(f.permanent for f in failures),
                      retry_after=max((f.retry_after or 0 for f in failures), default=0) or None)


def _until(settings: Settings, deadline: float | None) -> float:
    """When one download or transcription must end: MEDIA_TIMEOUT_SECONDS from now, or the
    run's deadline if that comes first."""
    until = time.monotonic() + settings.media_timeout_seconds
    return until if deadline is None else min(until, deadline)


def _time_left(until: float, what: str) -> float:
    left = until - time.monotonic()
    if left <= 0:
        # The run's time is up, not the media's fault: a later attempt may have time for it.
        raise MediaFailed(f"no time left in this reply to {what}", permanent=False)
    return left


def allowed_origin(url: str, hosts: tuple[AllowedHost, ...]) -> bool | None:
    """Whether MEDIA_ALLOWED_HOSTS lets `url` be fetched: None when it does not, else whether
    its origin was listed with its scheme (and so may be a private address)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").rstrip(".").lower()
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
    for entry in hosts:
        if entry.scheme is not None:
            if (parsed.scheme, host, port) == (entry.scheme, entry.host, entry.port):
                return True
        elif parsed.scheme == "https" and port == (entry.port or 443) and (
            host == entry.host
            or entry.host.startswith("*.") and host.endswith(entry.host[1:])
        ):
            return False
    return None


def _media_http(settings: Settings) -> httpx.Client:
    # The origins listed with a scheme may resolve to private addresses; a client (and so a
    # connection pool) per list, so a connection is never reused under another list's rules.
    private = frozenset((e.host, e.port) for e in settings.media_allowed_hosts if e.scheme)
    key = ",".join(sorted(f"{host}:{port}" for host, port in private))
    return shared_client(f"media:{key}", lambda: egress.client(
        lambda host, port: (host, port) in private, _limits()))


def _download_http() -> httpx.Client:
    # The config's own WuzAPI, set by the admin and usually on a private network: its address
    # is not checked, only the deadline applies.
    return shared_client("media-download", lambda: egress.client(None, _limits()))


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=per_shard_limit(100),
                        max_keepalive_connections=per_shard_limit(20))


def _get(url: str, settings: Settings, until: float) -> bytes:
    # Never the URL in a message: a presigned one carries its signature.
    private_ok = allowed_origin(url, settings.media_allowed_hosts)
    if private_ok is None:
        raise MediaFailed("the S3 URL is not on an https host of MEDIA_ALLOWED_HOSTS",
                          permanent=True)
    _time_left(until, "fetch the media")
    timeout = egress.timeout_until(until)
    try:
        with egress.deadline(until), \
                _media_http(settings).stream("GET", url, timeout=timeout) as response:
            _check_status(response.status_code, "the S3 URL")
            return _read_capped(response, settings.media_max_bytes)
    except egress.AddressRefused as exc:
        raise MediaFailed("the S3 URL's host resolves to a private or local address",
                          permanent=True) from exc
    except httpx.TimeoutException as exc:
        raise MediaFailed("timeout fetching the S3 URL", permanent=False) from exc
    except httpx.HTTPError as exc:
        raise MediaFailed(f"{type(exc).__name__} fetching the S3 URL", permanent=False) from exc


def _download(send: dict[str, Any], path: str, keys: dict[str, Any], settings: Settings,
              until: float) -> tuple[bytes, str | None]:
    """WuzAPI's /chat/download*: {"code": 200, "data": {"Data": "data:<mime>;base64,…",
    "Mimetype": …}, "success": true}. WuzAPI answers 500 to every failure (no session, media
    expired, WhatsApp unreachable): counted as retryable, within the attempt budget."""
    url = f"{str(send.get('base_url', '')).rstrip('/')}{path}"
    what = f"WuzAPI {path}"
    body = {key: keys[key] for key in _DOWNLOAD_FIELDS if key in keys}
    # The answer is the media in base64 inside JSON: a third larger than the media itself.
    cap = settings.media_max_bytes * 4 // 3 + 64 * 1024
    _time_left(until, "fetch the media")
    timeout = egress.timeout_until(until)
    try:
        with egress.deadline(until), _download_http().stream(
            "POST", url, json=body, headers={"Token": str(send.get("token", ""))},
            timeout=timeout,
        ) as response:
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
    if len(content) > settings.media_max_bytes:
        raise MediaFailed("the media is over MEDIA_MAX_BYTES", permanent=True)
    return content, (declared if isinstance(declared, str) and declared else from_url)


def _check_status(status: int, what: str) -> None:
    if status >= 500 or status in (408, 425, 429):
        raise MediaFailed(f"{what} answered {status}", permanent=False)
    if status >= 300:
        raise MediaFailed(f"{what} answered {status}", permanent=True)


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise MediaFailed("the media is over MEDIA_MAX_BYTES", permanent=True)
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
