"""A config's playground (admins only): chat with its bot in the browser, and replay a past
conversation's last customer turn against it, before or without connecting WhatsApp.

The console never runs the model (it does not import the LLM boundary): a turn is recorded
(zapreply.actions.playground), published as a task, and answered by a worker, which writes
the model's text into the turn's row as it streams in. The page follows a running turn with
server-sent events the way the live updates work (console_app.live): each request answers at
once with the text after the browser's Last-Event-ID (an offset in the text) and a short
`retry:`, then ends, so no thread is held while the model writes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from console_app import context, forms
from console_app.auth import actor, admin_only
from zapreply.actions import playground
from zapreply.actions.configs import get_config
from zapreply.broker.queue import PLAYGROUND_TURN
from zapreply.storage.db import session_scope
from zapreply.storage.models import PlaygroundStatus

bp = Blueprint("playground", __name__, url_prefix="/configs/<int:config_id>/playground")
bp.before_request(admin_only(lambda: None))
log = logging.getLogger(__name__)

# While a turn streams, the browser asks again this often.
RETRY_MS = 250
FINISHED = (PlaygroundStatus.DONE, PlaygroundStatus.FAILED)
NOT_PUBLISHED = "The task queue cannot be reached, so no worker will answer; try again shortly."


@bp.get("")
def page(config_id: int) -> Any:
    raw = request.args.get("chat")
    if not raw:
        return redirect(url_for("playground.page", config_id=config_id,
                                chat=playground.new_chat()), code=303)
    return _page(config_id, playground.parse_chat(raw), None)


@bp.post("/try")
def try_edits(config_id: int) -> Any:
    """The config page's edits, not saved, brought into a new chat here."""
    return _page(config_id, playground.new_chat(), _edits())


def _page(config_id: int, chat: str, edits: playground.Edits | None) -> Any:
    with session_scope() as session:
        config = get_config(session, config_id)
        playground.give_up_stale(session, config_id, stale_seconds=_stale_seconds())
        turns = playground.chat_turns(session, config_id, chat)
        replays = playground.replays(session, config_id)
        tokens, cost = playground.usage_today(session, config_id)
        # The settings the operator tried last stay on the page (they are not saved).
        latest = turns[-1] if turns else replays[0] if replays else None
        tried = latest.overrides if latest is not None and edits is None else {}
        return render_template(
            "playground.html", config=config, config_id=config.id, chat=chat, turns=turns,
            replays=replays, conversations=playground.replayable(session, config),
            system_prompt=edits.system_prompt if edits and edits.system_prompt is not None
            else tried.get("system_prompt", config.system_prompt),
            model=edits.model if edits and edits.model else tried.get("model", config.model),
            dry_run=latest.dry_run if latest is not None else True,
            usage={"tokens": tokens, "cost": cost})


@bp.post("/turns")
def send(config_id: int) -> Response:
    chat = playground.parse_chat(request.form.get("chat", ""))
    with session_scope() as session:
        turn_id = playground.start_chat_turn(
            session, config_id, chat, request.form.get("message", ""), dry_run=_dry_run(),
            edits=_edits(), actor=actor()).id
    _publish(turn_id)
    return redirect(url_for("playground.page", config_id=config_id, chat=chat,
                            _anchor=f"turn-{turn_id}"), code=303)


@bp.post("/replays")
def replay(config_id: int) -> Response:
    chat = playground.parse_chat(request.form.get("chat", "")) if request.form.get("chat") \
        else playground.new_chat()
    conversation_id = forms.optional_id("conversation", source="form")
    with session_scope() as session:
        turn_id = playground.start_replay(session, config_id, conversation_id,
                                          dry_run=_dry_run(), edits=_edits(),
                                          actor=actor()).id
    _publish(turn_id)
    return redirect(url_for("playground.page", config_id=config_id, chat=chat,
                            _anchor=f"turn-{turn_id}"), code=303)


@bp.get("/turns/<int:turn_id>")
def turn(config_id: int, turn_id: int) -> str:
    """One turn as the page shows it: what the page swaps in when its stream ends."""
    with session_scope() as session:
        found = playground.get_turn(session, config_id, turn_id)
        return render_template("_playground_turn.html", turn=found, config_id=config_id)


@bp.get("/turns/<int:turn_id>/stream")
def stream(config_id: int, turn_id: int) -> Response:
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or ""
    offset = int(raw) if raw.isdigit() and len(raw) < 10 else 0
    with session_scope() as session:
        status, text = playground.progress(session, config_id, turn_id,
                                           stale_seconds=_stale_seconds())
    data: dict[str, Any] = {"text": text[offset:], "status": status}
    if offset > len(text):
        data = {"text": text, "status": status, "replace": True}
    body = f"retry: {RETRY_MS}\nid: {len(text)}\nevent: text\ndata: {json.dumps(data)}\n\n"
    if status in FINISHED:
        body += "event: done\ndata: {}\n\n"
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _publish(turn_id: int) -> None:
    # After the commit, so the worker finds the turn.
    try:
        context.publisher().send(PLAYGROUND_TURN, args=[turn_id])
    except Exception:  # noqa: BLE001 - any broker failure: the turn shows why it never ran
        log.warning("playground turn %s: could not publish", turn_id, exc_info=True)
        playground.not_queued(turn_id, NOT_PUBLISHED)


def _stale_seconds() -> float:
    # A worker stops any task by its time limit: a turn silent longer has no one answering it.
    return float(context.settings().task_time_limit_seconds)


def _dry_run() -> bool:
    return request.form.get("dry_run") == "on"


def _edits() -> playground.Edits:
    return playground.Edits(system_prompt=request.form.get("system_prompt"),
                            model=request.form.get("model"))

