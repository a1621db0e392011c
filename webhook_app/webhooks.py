"""POST /webhooks/wuzapi: read, authenticate, parse, look up, enqueue, answer.

Nothing slow happens here: WuzAPI waits on this answer (30 s timeout) and retries anything but
a 2xx, so every failure of ours that a retry can fix is a 503, and every client mistake a 4xx.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from kombu.exceptions import KombuError, OperationalError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout
from werkzeug.wsgi import get_content_length

from webhook_app import authentication, deadline, routing
from zapreply.broker.queue import HANDLE_INBOUND, RECORD_IGNORED
from zapreply.channel import wuzapi
from zapreply.metrics import series
from zapreply.settings import Settings, get_settings

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)


def _answer(status: str, code: int = 200, *, counted: bool = True,
            **extra: Any):  # type: ignore[no-untyped-def]
    """`counted` False: built before the broker has the task, counted once it has."""
    if counted:
        series.webhook(status)
    return jsonify(status=status, **extra), code


def _error(message: str, code: int):  # type: ignore[no-untyped-def]
    # webhook_app.errors counts the refusals werkzeug raises (400, 408, 413).
    series.webhook_refused(code)
    return jsonify(error=message), code


def _body(limit: int, timeout: float) -> bytes:
    """The request body; 413 if it is longer than `limit` bytes, 408 if it has not all arrived
    `timeout` seconds after the headers.

    Werkzeug's rules, read straight from the WSGI input: behind gunicorn, with
    MAX_CONTENT_LENGTH set, `request.get_data()` reads every body through a LimitedStream in
    64 KB buffers, ~20 µs of a webhook's CPU (docs/PERFORMANCE.md, "Receiver"). A Content-Length
    over the limit is refused unread; a body shorter than its Content-Length means the client
    went away (400). A body without one (chunked) is read only from a server that marks its end
    (`wsgi.input_terminated`, gunicorn does), one byte past the limit to tell a body of exactly
    the limit from a longer one; from any other server it is empty.

    The deadline is kept on gunicorn's socket (webhook_app.deadline): a client trickling its
    body would otherwise hold a worker thread for as long as it keeps sending.
    """
    environ = request.environ
    length = get_content_length(environ)
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    if length is None and "wsgi.input_terminated" not in environ:
        return b""
    wanted = limit + 1 if length is None else length
    sock = environ.get("gunicorn.socket")
    watch = deadline.watcher.watch(sock, timeout) if sock is not None else None
    try:
        body = _read(environ["wsgi.input"], wanted)
    except OSError:
        body = None
    if watch is not None and deadline.watcher.release(watch):
        log.warning("webhook body from %s not received within %s s; cut off",
                    environ.get("REMOTE_ADDR"), timeout)
        raise RequestTimeout()
    if body is None:
        raise ClientDisconnected()
    if length is None and len(body) > limit:
        raise RequestEntityTooLarge()
    if length is not None and len(body) < length:
        raise ClientDisconnected()
    return body


def _read(stream: Any, size: int) -> bytes:
    """`size` bytes, fewer only where the stream ends: a WSGI input may return less per read."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    size -= len(data)
    while size > 0 and (data := stream.read(size)):
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


class _Parsed:
    """The body, parsed on first use into WuzAPI's envelope and the message it carries."""

    __slots__ = ("_body", "_content_type", "_inline_media_limit", "_parsed")

    def __init__(self, content_type: str | None, body: bytes, inline_media_limit: int) -> None:
        self._content_type = content_type
        self._body = body
        self._inline_media_limit = inline_media_limit
        self._parsed: tuple[wuzapi.Envelope, wuzapi.InboundMessage | wuzapi.Ignored] | None = None

    def __call__(self) -> tuple[wuzapi.Envelope, wuzapi.InboundMessage | wuzapi.Ignored]:
        """Raises wuzapi.BadPayload, each time it is called, for a body that does not parse."""
        if self._parsed is None:
            envelope = wuzapi.parse_envelope(self._content_type, self._body)
            self._parsed = envelope, wuzapi.read_message(
                envelope, inline_media_limit=self._inline_media_limit)
        return self._parsed

    def envelope(self) -> wuzapi.Envelope:
        return self()[0]


@bp.post("/webhooks/wuzapi")
@bp.post("/webhooks/wuzapi/<instance>")
@bp.post("/webhooks/wuzapi/<instance>/<secret>")
def receive(instance: str | None = None, secret: str | None = None):  # type: ignore[no-untyped-def]
    settings = get_settings()
    body = _body(settings.max_body_bytes, settings.webhook_read_timeout_seconds)
    # From the WSGI environ: request.headers would build its EnvironHeaders for this alone.
    parsed = _Parsed(request.environ.get("CONTENT_TYPE"), body,
                     settings.media_inline_max_bytes)
    routes = current_app.extensions[routing.EXTENSION]
    try:
        verdict = authentication.authenticate(
            settings, routes, body, request.headers.get("x-hmac-signature"), parsed.envelope,
            url_instance=instance, secret=secret)
    except SQLAlchemyError:
        log.warning("database unreachable while authenticating a webhook", exc_info=True)
        return _error("database unavailable, retry later", 503)
    if isinstance(verdict, authentication.Refused):
        return _error(verdict.reason, 401)
    try:
        envelope, message = parsed()
    except wuzapi.BadPayload as exc:
        return _error(str(exc), 400)

    if isinstance(message, wuzapi.Ignored) and not message.is_message:
        # Receipts, presence, connection events: nothing to record.
        return _answer("ignored", reason=message.reason)
    if verdict.instance is not None:
        candidates = [verdict.instance]
    else:
        candidates = [instance] if instance else envelope.instance_candidates()
    if not candidates:
        return _error("no instance: give it in the URL, instanceName, userID or token", 400)
    return _route_and_publish(settings, routes, candidates, envelope, message)


def _route_and_publish(settings: Settings, routes: routing.Routes, candidates: list[str],
                       envelope: wuzapi.Envelope,
                       message: wuzapi.InboundMessage | wuzapi.Ignored):  # type: ignore[no-untyped-def]
    """The instance's active config, and the task for it: 200 only once the broker has it."""
    publisher = current_app.extensions["zapreply.publisher"]
    try:
        config = routes.active_config(candidates)
        if config is None:
            return _answer("ignored", reason="no active workflow config for this instance")
        if isinstance(message, wuzapi.Ignored) and message.is_group and config.groups:
            # A config on this instance answers groups: read the message after all.
            message = wuzapi.read_message(envelope, groups=True,
                                          inline_media_limit=settings.media_inline_max_bytes)
        if isinstance(message, wuzapi.Ignored):
            # read_message checked that Info.ID and Info.Chat are present strings.
            info = envelope.event["Info"]
            kwargs = {
                "instance": config.instance, "reason": message.reason,
                "wa_message_id": wuzapi.storable(info["ID"]),
                "chat_jid": wuzapi.storable(info["Chat"]),
            }
            if message.details:
                kwargs["details"] = message.details
            with publisher.publishing(RECORD_IGNORED, kwargs,
                                      kwargsrepr=f"{{'instance': {config.instance!r}, ...}}"):
                answer = _answer("ignored", counted=False, reason=message.reason)
            series.webhook(series.IGNORED)
            return answer
        if routes.recently_enqueued(config.instance, message.wa_message_id):
            return _answer("duplicate", message_id=message.wa_message_id)
        # The task header shown in Flower names the message, never what the customer wrote
        # (and building Celery's default repr of the whole payload costs CPU on every webhook).
        payload = message.as_payload()
        # The worker measures the message's age at this moment (zapreply.rules.staleness):
        # time spent in our own queue does not make it stale.
        payload["received_at"] = time.time()
        with publisher.publishing(HANDLE_INBOUND, {
            "config_id": config.id, "instance": config.instance, "message": payload,
        }, kwargsrepr=f"{{'config_id': {config.id}, 'wa_message_id': {message.wa_message_id!r}}}"):
            # Built while Redis takes the task; it goes out only once Redis has it.
            answer = _answer("queued", counted=False, message_id=message.wa_message_id)
    except SQLAlchemyError:
        log.warning("database unreachable while receiving a webhook", exc_info=True)
        return _error("database unavailable, retry later", 503)
    except (OperationalError, KombuError, OSError, *publisher.errors):
        log.warning("broker unreachable while receiving a webhook", exc_info=True)
        return _error("queue unavailable, retry later", 503)
    series.webhook(series.QUEUED)
    routes.remember_enqueued(config.instance, message.wa_message_id)
    return answer
