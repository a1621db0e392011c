"""The admin API's routes (SPEC §3): workflow configs, conversations, their messages, events,
replaying a run, a contact's personal data.

Every route needs `Authorization: Bearer $ADMIN_TOKEN`. JSON in and out; every error is
`{"error": "..."}` with a 4xx, or a 503 when the database is unreachable (a retry can help),
never a 500 for anything a client sent. Each route parses the request, calls one use case of
zapreply.actions and formats its answer; an action's error picks the status by its type.

Paging (`limit` 1..200, default 50; ids are the cursors, so a page never shifts when rows
are added; zapreply.actions.paging):
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

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from admin_api.auth import require_admin_token
from admin_api.parsing import id_arg, json_body, limit_arg, parse_id, text_arg
from zapreply.actions import configs as config_actions
from zapreply.actions import contacts, documents, knowledge, replay
from zapreply.actions import conversations as conversation_actions
from zapreply.actions.errors import ActionError, Conflict, Invalid, NotFound
from zapreply.actions.events import list_events as find_events
from zapreply.rules import configs, conversations
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, Message, extra_of, utcnow

bp = Blueprint("admin", __name__, url_prefix="/api")

ACTOR = "admin"
PAUSE_REASON = "paused by an operator"
STATUS = {NotFound: 404, Conflict: 409, Invalid: 400}


@bp.errorhandler(ActionError)
def _action_error(error: ActionError) -> tuple[Response, int]:
    status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
    return jsonify(error=error.message), status


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


bp.before_request(require_admin_token)


# Workflow configs.


@bp.post("/workflow-configs")
def create_workflow_config() -> tuple[Response, int]:
    data = json_body()
    with session_scope() as session:
        view = configs.public_view(config_actions.create_config(session, data))
    response = jsonify(view)
    response.headers["Location"] = f"{bp.url_prefix}/workflow-configs/{view['id']}"
    return response, 201


@bp.get("/workflow-configs")
def list_workflow_configs() -> Response:
    instance = text_arg("instance")
    with session_scope() as session:
        rows = config_actions.list_configs(session, instance=instance)
        return jsonify(workflow_configs=[configs.public_view(row) for row in rows])


@bp.get("/workflow-configs/<config_id>")
def get_workflow_config(config_id: str) -> Response:
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        return jsonify(configs.public_view(config_actions.get_config(session, parsed)))


@bp.patch("/workflow-configs/<config_id>")
def update_workflow_config(config_id: str) -> Response:
    data = json_body()
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        return jsonify(configs.public_view(config_actions.update_config(session, parsed, data)))


@bp.post("/workflow-configs/<config_id>/rotate-webhook-secret")
def rotate_webhook_secret(config_id: str) -> Response:
    """A new webhook_path for WuzAPI; the old one gets 401 from then on."""
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        return jsonify(configs.public_view(config_actions.rotate_webhook_secret(session, parsed)))


@bp.delete("/workflow-configs/<config_id>")
def delete_workflow_config(config_id: str) -> tuple[str, int]:
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        config_actions.delete_config(session, parsed)
    return "", 204


# A config's knowledge base: documents and FAQ entries.


@bp.post("/workflow-configs/<config_id>/knowledge")
def add_knowledge_document(config_id: str) -> tuple[Response, int]:
    """JSON `{"title", "content"}`, JSON `{"url", "title"?, "refresh_hours"?}` (read later by
    a worker), or multipart/form-data with a `file` (and optionally a `title`)."""
    parsed = parse_id(config_id, "workflow config id")
    document = _document_from_request()
    with session_scope() as session:
        row = knowledge.add_document(session, parsed, document)
        view = knowledge.shown(session, row)
    response = jsonify(view)
    response.headers["Location"] = (f"{bp.url_prefix}/workflow-configs/{parsed}/knowledge/"
                                    f"{view['id']}")
    return response, 201


@bp.get("/workflow-configs/<config_id>/knowledge")
def list_knowledge_documents(config_id: str) -> Response:
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        return jsonify(documents=knowledge.list_documents(session, parsed))


@bp.get("/workflow-configs/<config_id>/knowledge/<document_id>")
def get_knowledge_document(config_id: str, document_id: str) -> Response:
    parsed = parse_id(config_id, "workflow config id")
    doc_id = parse_id(document_id, "document id")
    with session_scope() as session:
        row = knowledge.get_document(session, parsed, doc_id)
        return jsonify(knowledge.shown(session, row, content=True))


@bp.put("/workflow-configs/<config_id>/knowledge/<document_id>")
def replace_knowledge_document(config_id: str, document_id: str) -> Response:
    """The whole document replaced (title and text), as POST takes it."""
    parsed = parse_id(config_id, "workflow config id")
    doc_id = parse_id(document_id, "document id")
    document = _document_from_request()
    with session_scope() as session:
        row = knowledge.replace_document(session, parsed, doc_id, document)
        return jsonify(knowledge.shown(session, row))


@bp.post("/workflow-configs/<config_id>/knowledge/<document_id>/refresh")
def refresh_knowledge_document(config_id: str, document_id: str) -> Response:
    """A URL document due now: a worker fetches it within KNOWLEDGE_REFRESH_INTERVAL_SECONDS."""
    parsed = parse_id(config_id, "workflow config id")
    doc_id = parse_id(document_id, "document id")
    with session_scope() as session:
        return jsonify(knowledge.shown(session, knowledge.refresh_document(session, parsed,
                                                                           doc_id)))


@bp.delete("/workflow-configs/<config_id>/knowledge/<document_id>")
def delete_knowledge_document(config_id: str, document_id: str) -> tuple[str, int]:
    parsed = parse_id(config_id, "workflow config id")
    doc_id = parse_id(document_id, "document id")
    with session_scope() as session:
        knowledge.delete_document(session, parsed, doc_id)
    return "", 204


def _document_from_request() -> documents.Document | documents.Source:
    if (request.content_length or 0) > documents.MAX_UPLOAD_BYTES + 64 * 1024:
        raise Invalid(f"document too large: at most {documents.MAX_UPLOAD_BYTES} bytes")
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise Invalid("multipart body must have a 'file' part")
        data = upload.read(documents.MAX_UPLOAD_BYTES + 1)
        return documents.from_upload(data, filename=upload.filename,
                                     mimetype=upload.mimetype, title=request.form.get("title"))
    data = json_body()
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object with 'title' and 'content' or with 'url', "
                      "or a multipart file")
    if "url" in data:
        unknown = sorted(set(data) - {"url", "title", "refresh_hours"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}")
        if "refresh_hours" in data:
            return documents.from_url(data["url"], data.get("title"), data["refresh_hours"])
        return documents.from_url(data["url"], data.get("title"))
    unknown = sorted(set(data) - {"title", "content"})
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")
    return documents.from_text(data.get("title"), data.get("content"))


@bp.post("/workflow-configs/<config_id>/faq")
def add_faq_entry(config_id: str) -> tuple[Response, int]:
    """`{"question", "answer"}`: an approved answer, searched before the documents."""
    data = json_body()
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        view = knowledge.faq_view(knowledge.add_faq(session, parsed, data))
    response = jsonify(view)
    response.headers["Location"] = f"{bp.url_prefix}/workflow-configs/{parsed}/faq/{view['id']}"
    return response, 201


@bp.get("/workflow-configs/<config_id>/faq")
def list_faq_entries(config_id: str) -> Response:
    parsed = parse_id(config_id, "workflow config id")
    with session_scope() as session:
        return jsonify(faq=[knowledge.faq_view(row)
                            for row in knowledge.list_faq(session, parsed)])


@bp.put("/workflow-configs/<config_id>/faq/<faq_id>")
def replace_faq_entry(config_id: str, faq_id: str) -> Response:
    data = json_body()
    parsed, entry = parse_id(config_id, "workflow config id"), parse_id(faq_id, "FAQ id")
    with session_scope() as session:
        return jsonify(knowledge.faq_view(knowledge.replace_faq(session, parsed, entry, data)))


@bp.delete("/workflow-configs/<config_id>/faq/<faq_id>")
def delete_faq_entry(config_id: str, faq_id: str) -> tuple[str, int]:
    parsed, entry = parse_id(config_id, "workflow config id"), parse_id(faq_id, "FAQ id")
    with session_scope() as session:
        knowledge.delete_faq(session, parsed, entry)
    return "", 204


# Conversations.


@bp.get("/conversations")
def list_conversations() -> Response:
    now = utcnow()
    instance, status = text_arg("instance"), text_arg("status")
    limit, before_id = limit_arg(), id_arg("before_id")
    with session_scope() as session:
        page = conversation_actions.list_conversations(
            session, now=now, instance=instance, status=status, limit=limit,
            before_id=before_id)
        return jsonify(conversations=[conversations.public_view(row, now) for row in page.rows],
                       **page.cursor())


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    parsed = parse_id(conversation_id, "conversation id")
    with session_scope() as session:
        conversation = conversation_actions.get_conversation(session, parsed)
        return jsonify(conversations.public_view(conversation, utcnow()))


@bp.get("/conversations/<conversation_id>/messages")
def list_messages(conversation_id: str) -> Response:
    limit, before_id, after_id = limit_arg(), id_arg("before_id"), id_arg("after_id")
    parsed = parse_id(conversation_id, "conversation id")
    with session_scope() as session:
        page = conversation_actions.list_messages(
            session, parsed, limit=limit, before_id=before_id, after_id=after_id)
        return jsonify(messages=[_message_view(row) for row in page.rows], **page.cursor())


@bp.post("/conversations/<conversation_id>/pause")
def pause_conversation(conversation_id: str) -> Response:
    """`{"reason": str, "minutes": number | null}`, both optional: by default until resumed."""
    data = json_body(optional=True)
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object")
    unknown = sorted(set(data) - {"reason", "minutes"})
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")
    reason = data.get("reason")
    parsed = parse_id(conversation_id, "conversation id")
    now = utcnow()
    with session_scope() as session:
        conversation = conversation_actions.pause(
            session, parsed, reason=PAUSE_REASON if reason is None else reason,
            minutes=data.get("minutes"), actor=ACTOR, now=now)
        return jsonify(conversations.public_view(conversation, now))


@bp.post("/conversations/<conversation_id>/resume")
def resume_conversation(conversation_id: str) -> Response:
    parsed = parse_id(conversation_id, "conversation id")
    now = utcnow()
    with session_scope() as session:
        conversation = conversation_actions.resume(session, parsed, actor=ACTOR, now=now)
        return jsonify(conversations.public_view(conversation, now))


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
        "quoted": extra_of(message).get("quoted"),
        "reactions": extra_of(message).get("reactions", []),
    }


# Runs and events.


@bp.post("/runs/<run_id>/replay")
def replay_run(run_id: str) -> tuple[Response, int]:
    """Re-run a failed reply run (after the LLM or messages API is back)."""
    from zapreply.broker.queue import REPLY

    parsed = parse_id(run_id, "run id")
    with session_scope() as session:
        conversation_id = replay.reopen_run(session, parsed, actor=ACTOR).conversation_id
    # Published only once the reopened run is committed, so the worker finds it running.
    current_app.extensions["zapreply.publisher"].send(REPLY, args=[conversation_id])
    return jsonify(run_id=parsed, conversation_id=conversation_id, status="queued"), 202


@bp.get("/events")
def list_events() -> Response:
    conversation_id, run_id = id_arg("conversation_id"), id_arg("run_id")
    event_type = text_arg("type")
    limit, before_id, after_id = limit_arg(), id_arg("before_id"), id_arg("after_id")
    with session_scope() as session:
        page = find_events(session, conversation_id=conversation_id, run_id=run_id,
                           event_type=event_type, limit=limit, before_id=before_id,
                           after_id=after_id)
        return jsonify(events=[_event_view(row) for row in page.rows], **page.cursor())


def _event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "conversation_id": event.conversation_id,
        "run_id": event.run_id,
        "payload": event.payload,
        "created_at": _iso(event.created_at),
    }


# Contacts: personal data.


@bp.get("/contacts/<phone>/export")
def export_contact(phone: str) -> Response:
    """Everything stored about a phone number or JID: its conversations with their messages
    and events, its own messages in groups."""
    with session_scope() as session:
        return jsonify(contacts.export_contact(session, phone))


@bp.delete("/contacts/<phone>")
def erase_contact(phone: str) -> Response:
    """Erase a contact; the `contact.erased` event it leaves holds counts only."""
    return jsonify(erased=contacts.erase_contact(phone, actor=ACTOR))


@bp.get("/contacts/<phone>/notes")
def contact_notes(phone: str) -> Response:
    """A contact's notes on an instance (`?instance=`)."""
    with session_scope() as session:
        return jsonify(contacts.notes_of(session, text_arg("instance"), phone))


@bp.put("/contacts/<phone>/notes")
def set_contact_notes(phone: str) -> Response:
    """Replace a contact's notes on an instance (`?instance=`): `{"notes": "…"}`, one fact a
    line; null or "" clears them."""
    body = json_body()
    if not isinstance(body, dict) or "notes" not in body:
        raise Invalid('body must be {"notes": "…"}')
    with session_scope() as session:
        return jsonify(contacts.set_notes(session, text_arg("instance"), phone, body["notes"],
                                          actor=ACTOR))


@bp.post("/contacts/merge-split")
def merge_split_contacts() -> Response:
    """Merge the conversations each person's LID and phone number left apart (`{"instance"}`
    optional). Pairs a reply run held are listed in `busy`: run it again."""
    body = json_body(optional=True)
    instance = body.get("instance") if isinstance(body, dict) else None
    if instance is not None and (not isinstance(instance, str) or not instance.strip()):
        raise Invalid("'instance' must be a non-empty string")
    return jsonify(contacts.merge_split(instance=instance, actor=ACTOR))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
