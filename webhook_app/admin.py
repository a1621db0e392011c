"""The admin API (SPEC §3): workflow configs, conversations, their messages, events.

Every route needs `Authorization: Bearer $ADMIN_TOKEN`; with ADMIN_TOKEN unset the whole API
answers 503. JSON in and out; every error is `{"error": "..."}` with a 4xx, or a 503 when the
database is unreachable (a retry can help), never a 500 for anything a client sent.

Paging (`limit` 1..200, default 50; ids are the cursors, so a page never shifts when rows
are added):
- `GET /conversations` and `GET /events`: newest first; pass the answer's `next_before_id` as
  `before_id` for the page before it (null when there is none; `has_more` says the same).
- `GET /events?after_id=N`: oldest first, the events after N, for tailing the log: pass the
  answer's `next_after_id` as `after_id` to poll for what came since.
- `GET /conversations/<id>/messages`: always chronological; by default the latest `limit`
  messages, with `before_id` the ones before it (`next_before_id` for older), with `after_id`
  the first ones after it (`next_after_id` for newer).

Config changes reach the receiver within CONFIG_CACHE_SECONDS (webhook_app.routing caches).
"""

from __future__ import annotations

import hmac
import json
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import Select, not_, select
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import InstrumentedAttribute, Session

from zapreply.actions import privacy
from zapreply.rules import configs, conversations
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message, WorkflowConfig, utcnow

bp = Blueprint("admin", __name__, url_prefix="/api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_ID = 2**63 - 1
ACTOR = "admin"
PAUSE_REASON = "paused by an operator"
MAX_PAUSE_MINUTES = 366 * 24 * 60


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@bp.errorhandler(ApiError)
def _api_error(error: ApiError) -> tuple[Response, int]:
    return jsonify(error=error.message), error.status


@bp.errorhandler(configs.InvalidConfig)
def _invalid_config(error: configs.InvalidConfig) -> tuple[Response, int]:
    # Raised past validation only when applying to the stored config (a masked tool header
    # with nothing stored behind it).
    return jsonify(error=str(error)), 400


@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
@bp.errorhandler(PoolTimeoutError)
def _database_unavailable(error: Exception) -> tuple[Response, int]:
    current_app.logger.warning("admin API: database unavailable: %s", type(error).__name__)
    return jsonify(error="database unavailable"), 503


@bp.errorhandler(DataError)
def _data_error(error: DataError) -> tuple[Response, int]:
    # Validation should have caught it. Neither the database's message nor the statement's
    # parameters are logged: they may hold a send token.
    current_app.logger.warning("admin API: value rejected by the database: %s",
                               type(error.orig).__name__)
    return jsonify(error="a value is not valid for the database (too long?)"), 400


@bp.before_request
def _require_admin_token() -> tuple[Response, int] | None:
    expected = current_app.config["ZAPREPLY_SETTINGS"].admin_token
    if not expected:
        return jsonify(error="admin API disabled: set ADMIN_TOKEN"), 503
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), expected.encode("utf-8")
    ):
        response = jsonify(error="missing or invalid bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response, 401
    return None


# Workflow configs.


@bp.post("/workflow-configs")
def create_workflow_config() -> tuple[Response, int]:
    values = _config_values(_json_body(), partial=False)
    if values["send"]["token"] == configs.MASK:
        raise ApiError(400, "'send.token' must be the real token, not the mask GET shows")
    with session_scope() as session:
        config = WorkflowConfig()
        configs.apply(config, values)
        session.add(config)
        session.flush()
        view = configs.public_view(config)
    response = jsonify(view)
    response.headers["Location"] = f"{bp.url_prefix}/workflow-configs/{view['id']}"
    return response, 201


@bp.get("/workflow-configs")
def list_workflow_configs() -> Response:
    statement = select(WorkflowConfig).order_by(WorkflowConfig.id)
    instance = _text_arg("instance")
    if instance is not None:
        statement = statement.where(WorkflowConfig.instance == instance)
    with session_scope() as session:
        rows = session.scalars(statement).all()
        return jsonify(workflow_configs=[configs.public_view(row) for row in rows])


@bp.get("/workflow-configs/<config_id>")
def get_workflow_config(config_id: str) -> Response:
    with session_scope() as session:
        return jsonify(configs.public_view(_config_or_404(session, config_id)))


@bp.patch("/workflow-configs/<config_id>")
def update_workflow_config(config_id: str) -> Response:
    data = _json_body()
    with session_scope() as session:
        config = _config_or_404(session, config_id, for_update=True)
        if isinstance(data, dict) and isinstance(data.get("send"), dict):
            # PATCH merges into `send` too: changing base_url alone keeps driver and token. The
            # token left out stands as the mask, so that it stays only with its host
            # (configs.apply).
            stored = {**(config.send or {}), "token": configs.MASK}
            data = {**data, "send": {**stored, **data["send"]}}
        configs.apply(config, _config_values(data, partial=True))
        session.flush()
        return jsonify(configs.public_view(config))


@bp.post("/workflow-configs/<config_id>/rotate-webhook-secret")
def rotate_webhook_secret(config_id: str) -> Response:
    """A new webhook_path for WuzAPI; the old one gets 401 from then on."""
    with session_scope() as session:
        config = _config_or_404(session, config_id, for_update=True)
        configs.rotate_webhook_secret(config)
        session.flush()
        return jsonify(configs.public_view(config))


@bp.delete("/workflow-configs/<config_id>")
def delete_workflow_config(config_id: str) -> tuple[str, int]:
    with session_scope() as session:
        session.delete(_config_or_404(session, config_id, for_update=True))
    return "", 204


def _config_values(data: Any, *, partial: bool) -> dict[str, Any]:
    try:
        values = configs.validate(data, partial=partial)
    except configs.InvalidConfig as exc:
        raise ApiError(400, str(exc)) from None
    columns = WorkflowConfig.__table__.c
    for name, value in values.items():
        length = getattr(columns[name].type, "length", None) if name in columns else None
        if isinstance(value, str) and length is not None and len(value) > length:
            raise ApiError(400, f"'{name}' must be at most {length} characters")
    return values


def _config_or_404(session: Session, raw_id: str, *, for_update: bool = False) -> WorkflowConfig:
    config_id = _parse_id(raw_id, "workflow config id")
    config = session.get(WorkflowConfig, config_id, with_for_update=for_update)
    if config is None:
        raise ApiError(404, f"workflow config {config_id} not found")
    return config


# Conversations.


@bp.get("/conversations")
def list_conversations() -> Response:
    now = utcnow()
    statement = select(Conversation)
    instance = _text_arg("instance")
    if instance is not None:
        statement = statement.where(Conversation.instance == instance)
    status = _text_arg("status")
    if status == conversations.PAUSED:
        statement = statement.where(conversations.paused_clause(now))
    elif status == conversations.ACTIVE:
        statement = statement.where(not_(conversations.paused_clause(now)))
    elif status is not None:
        raise ApiError(400, "'status' must be active or paused")
    limit, before_id = _limit(), _id_arg("before_id")
    with session_scope() as session:
        rows, page = _newest_first(
            session, statement, Conversation.id, limit=limit, before_id=before_id
        )
        return jsonify(
            conversations=[conversations.public_view(row, now) for row in rows], **page
        )


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    with session_scope() as session:
        conversation = _conversation_or_404(session, conversation_id)
        return jsonify(conversations.public_view(conversation, utcnow()))


@bp.get("/conversations/<conversation_id>/messages")
def list_messages(conversation_id: str) -> Response:
    limit = _limit()
    before_id = _id_arg("before_id")
    after_id = _id_arg("after_id")
    with session_scope() as session:
        conversation = _conversation_or_404(session, conversation_id)
        statement = select(Message).where(Message.conversation_id == conversation.id)
        if before_id is not None:
            statement = statement.where(Message.id < before_id)
        if after_id is not None:
            statement = statement.where(Message.id > after_id)
            rows = session.scalars(statement.order_by(Message.id).limit(limit + 1)).all()
            has_more = len(rows) > limit
            rows = rows[:limit]
            page = {"has_more": has_more,
                    "next_after_id": rows[-1].id if rows else after_id}
        else:
            rows = session.scalars(statement.order_by(Message.id.desc()).limit(limit + 1)).all()
            has_more = len(rows) > limit
            rows = list(reversed(rows[:limit]))
            page = {"has_more": has_more, "next_before_id": rows[0].id if has_more else None}
        return jsonify(messages=[_message_view(row) for row in rows], **page)


@bp.post("/conversations/<conversation_id>/pause")
def pause_conversation(conversation_id: str) -> Response:
    reason, minutes = _pause_request(_json_body(optional=True))
    with session_scope() as session:
        conversation = _conversation_or_404(session, conversation_id, for_update=True)
        now = utcnow()
        until = now + timedelta(minutes=minutes) if minutes is not None else None
        conversations.pause(session, conversation, reason=reason, until=until, actor=ACTOR)
        session.flush()
        return jsonify(conversations.public_view(conversation, now))


@bp.post("/conversations/<conversation_id>/resume")
def resume_conversation(conversation_id: str) -> Response:
    with session_scope() as session:
        conversation = _conversation_or_404(session, conversation_id, for_update=True)
        now = utcnow()
        conversations.resume(session, conversation, actor=ACTOR, now=now)
        session.flush()
        return jsonify(conversations.public_view(conversation, now))


def _pause_request(data: Any) -> tuple[str, float | None]:
    """`{"reason": str, "minutes": number | null}`, both optional: by default until resumed."""
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    unknown = sorted(set(data) - {"reason", "minutes"})
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    reason = data.get("reason")
    if reason is None:
        reason = PAUSE_REASON
    elif not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "'reason' must be a non-empty string")
    reason = reason.strip()
    length = Conversation.__table__.c.pause_reason.type.length
    if len(reason) > length:
        raise ApiError(400, f"'reason' must be at most {length} characters")
    minutes = data.get("minutes")
    if minutes is not None and (
        isinstance(minutes, bool)
        or not isinstance(minutes, int | float)
        or not 0 < minutes <= MAX_PAUSE_MINUTES
    ):
        raise ApiError(
            400, f"'minutes' must be a number above 0 and at most {MAX_PAUSE_MINUTES}, "
            "or null to pause until resumed",
        )
    return reason, float(minutes) if minutes is not None else None


def _conversation_or_404(
    session: Session, raw_id: str, *, for_update: bool = False
) -> Conversation:
    conversation_id = _parse_id(raw_id, "conversation id")
    # The row lock orders an operator's pause or resume with the worker's own (a business
    # message pausing the same conversation), so neither overwrites the other half-way.
    conversation = session.get(Conversation, conversation_id, with_for_update=for_update)
    if conversation is None:
        raise ApiError(404, f"conversation {conversation_id} not found")
    return conversation


def _message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "wa_message_id": message.wa_message_id,
        "media_type": message.media_type,
        "status": message.status,
        "provider_message_id": message.provider_message_id,
        "reply_run_id": message.reply_run_id,
        "created_at": _iso(message.created_at),
        "sent_at": _iso(message.sent_at),
    }


# Events.


@bp.post("/runs/<run_id>/replay")
def replay_run(run_id: str) -> tuple[Response, int]:
    """Re-run a failed reply run (after the LLM or messages API is back)."""
    from zapreply.actions import replay
    from zapreply.broker.queue import REPLY

    parsed = _parse_id(run_id, "run id")
    with session_scope() as session:
        try:
            run = replay.reopen_run(session, parsed, actor=ACTOR)
        except replay.CannotReplay as exc:
            status = 404 if str(exc).startswith("no run") else 409
            raise ApiError(status, str(exc)) from None
        conversation_id = run.conversation_id
    current_app.extensions["zapreply.publisher"].send(REPLY, args=[conversation_id])
    return jsonify(run_id=parsed, conversation_id=conversation_id, status="queued"), 202


@bp.get("/events")
def list_events() -> Response:
    statement = select(Event)
    conversation_id = _id_arg("conversation_id")
    if conversation_id is not None:
        statement = statement.where(Event.conversation_id == conversation_id)
    run_id = _id_arg("run_id")
    if run_id is not None:
        statement = statement.where(Event.run_id == run_id)
    event_type = _text_arg("type")
    if event_type is not None:
        statement = statement.where(Event.type == event_type)
    limit, before_id, after_id = _limit(), _id_arg("before_id"), _id_arg("after_id")
    with session_scope() as session:
        if after_id is None:
            rows, page = _newest_first(
                session, statement, Event.id, limit=limit, before_id=before_id
            )
        else:
            if before_id is not None:
                statement = statement.where(Event.id < before_id)
            rows = session.scalars(
                statement.where(Event.id > after_id).order_by(Event.id).limit(limit + 1)
            ).all()
            page = {"has_more": len(rows) > limit}
            rows = rows[:limit]
            page["next_after_id"] = rows[-1].id if rows else after_id
        return jsonify(events=[_event_view(row) for row in rows], **page)


def _event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "conversation_id": event.conversation_id,
        "run_id": event.run_id,
        "payload": event.payload,
        "created_at": _iso(event.created_at),
    }


# Contacts: personal data (zapreply.actions.privacy).


@bp.get("/contacts/<phone>/export")
def export_contact(phone: str) -> Response:
    """Everything stored about a phone number or JID: its conversations with their messages
    and events, its own messages in groups."""
    contact = _contact(phone)
    with session_scope() as session:
        data = privacy.export_contact(session, contact)
    if data is None:
        raise ApiError(404, "nothing is stored about this contact")
    return jsonify(data)


@bp.delete("/contacts/<phone>")
def erase_contact(phone: str) -> Response:
    """Erase a contact; the `contact.erased` event it leaves holds counts only."""
    counts = privacy.erase(_contact(phone), actor=ACTOR)
    if counts is None:
        raise ApiError(404, "nothing is stored about this contact")
    return jsonify(erased=counts)


def _contact(raw: str) -> privacy.Contact:
    try:
        return privacy.parse_contact(raw)
    except privacy.BadContact as exc:
        raise ApiError(400, str(exc)) from None


# Request parsing.


def _json_body(*, optional: bool = False) -> Any:
    raw = request.get_data(cache=False)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "body must be a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "body is not valid JSON") from None
    _check_storable(data)
    return data


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them, PostgreSQL's does not.
    raise ValueError(f"{name} is not a JSON value")


def _check_storable(data: Any) -> None:
    """PostgreSQL stores no NUL character and no lone surrogate (both valid in JSON text)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise ApiError(400, "strings must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "strings must be valid Unicode") from None


def _parse_id(raw: str, what: str) -> int:
    value = _digits(raw)
    if value is None or not 1 <= value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive integer, got {raw[:40]!r}")
    return value


def _digits(raw: str) -> int | None:
    # int() alone would take " 7", "+7", "7_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        return None
    return int(raw)


def _id_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    return _parse_id(raw, f"'{name}'")


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    value = _digits(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    return value


def _text_arg(name: str) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if "\x00" in raw:
        raise ApiError(400, f"'{name}' must not contain NUL characters")
    return raw


def _newest_first(
    session: Session,
    statement: Select[Any],
    id_column: InstrumentedAttribute[int],
    *,
    limit: int,
    before_id: int | None,
) -> tuple[list[Any], dict[str, Any]]:
    if before_id is not None:
        statement = statement.where(id_column < before_id)
    rows = list(session.scalars(statement.order_by(id_column.desc()).limit(limit + 1)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    return rows, {"has_more": has_more, "next_before_id": rows[-1].id if has_more else None}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
