"""The inbox and a conversation's page, with what an operator does there: take over, give
back, write as the business, replay a failed run, start a fresh session, export."""

from __future__ import annotations

import json

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from console_app import context, forms, live
from console_app.auth import actor
from zapreply.actions import configs as config_actions
from zapreply.actions import conversations as conversation_actions
from zapreply.actions import inbox as inbox_actions
from zapreply.actions import outreach, replay, transcripts
from zapreply.actions.errors import Invalid
from zapreply.broker.queue import REPLY, SEND_BUSINESS
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig, utcnow

bp = Blueprint("conversations", __name__)

TAKEOVER_REASON = "taken over in the console"


@bp.get("/")
def inbox() -> str:
    now = utcnow()
    instance = forms.text("instance")
    config_id = forms.optional_id("config")
    state = inbox_actions.parse_state(forms.text("state"))
    search = forms.text("q", max_length=inbox_actions.MAX_SEARCH)
    before = inbox_actions.parse_cursor(forms.text("before", max_length=80))
    with session_scope() as session:
        cursor = live.page_cursor(session)
        found = inbox_actions.list_inbox(session, now=now, instance=instance, config_id=config_id,
                                         state=state, search=search, before=before)
        template = "_inbox_live.html" if request.args.get("partial") else "inbox.html"
        return render_template(
            template, page=found, now=now, labels=inbox_actions.STATE_LABELS,
            states=list(inbox_actions.State), instances=inbox_actions.instances(session),
            configs=config_actions.list_configs(session),
            filters={"instance": instance or "", "config": config_id or "",
                     "state": state or "", "q": search or ""},
            head=cursor)


@bp.get("/conversations/<int:conversation_id>")
def conversation(conversation_id: int) -> str:
    now = utcnow()
    before = forms.optional_id("before")
    with session_scope() as session:
        cursor = live.page_cursor(session)
        found = transcripts.transcript(session, conversation_id, before=before)
        config = session.get(WorkflowConfig, found.conversation.workflow_config_id) \
            if found.conversation.workflow_config_id else None
        template = "_conversation_live.html" if request.args.get("partial") \
            else "conversation.html"
        return render_template(template, t=found, now=now, config=config,
                               state=inbox_actions.state_of(found.conversation, now),
                               labels=inbox_actions.STATE_LABELS, head=cursor)


@bp.post("/conversations/<int:conversation_id>/take-over")
def take_over(conversation_id: int) -> Response:
    minutes = forms.optional_minutes("minutes")
    with session_scope() as session:
        conversation_actions.pause(session, conversation_id, reason=TAKEOVER_REASON,
                                   minutes=minutes, actor=actor())
    flash("You have the conversation: the bot will not answer until you give it back."
          if minutes is None else f"The bot is paused for {minutes:g} minutes.")
    return _back(conversation_id)


@bp.post("/conversations/<int:conversation_id>/give-back")
def give_back(conversation_id: int) -> Response:
    with session_scope() as session:
        conversation_actions.resume(session, conversation_id, actor=actor())
    flash("The bot answers this conversation again.")
    return _back(conversation_id)


@bp.post("/conversations/<int:conversation_id>/write")
def write(conversation_id: int) -> Response:
    text = request.form.get("text", "")
    with session_scope() as session:
        message_id = outreach.write_as_business(session, conversation_id, text,
                                                actor=actor()).id
    # After the commit, so the worker finds the message.
    context.publisher().send(SEND_BUSINESS, args=[message_id])
    flash("Message queued; it is sent through the instance's messages API.")
    return _back(conversation_id)


@bp.post("/conversations/<int:conversation_id>/fresh-session")
def fresh_session(conversation_id: int) -> Response:
    with session_scope() as session:
        transcripts.start_fresh_session(session, conversation_id, actor=actor())
    flash("Fresh session: later replies will not see the messages before this point.")
    return _back(conversation_id)


@bp.post("/runs/<int:run_id>/replay")
def replay_run(run_id: int) -> Response:
    with session_scope() as session:
        conversation_id = replay.reopen_run(session, run_id, actor=actor()).conversation_id
    context.publisher().send(REPLY, args=[conversation_id])
    flash(f"Run {run_id} is being replayed.")
    target = request.form.get("from")
    if target == "runs":
        return redirect(url_for("runs.runs"), code=303)
    return _back(conversation_id)


@bp.get("/conversations/<int:conversation_id>/export.<kind>")
def export(conversation_id: int, kind: str) -> Response:
    if kind not in ("json", "txt"):
        raise Invalid("an export is .json or .txt")
    with session_scope() as session:
        data = transcripts.export(session, conversation_id, actor=actor())
    name = f"conversation-{conversation_id}.{kind}"
    if kind == "json":
        body = json.dumps(data, ensure_ascii=False, indent=2, default=str)
        mimetype = "application/json"
    else:
        body, mimetype = transcripts.as_text(data), "text/plain; charset=utf-8"
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _back(conversation_id: int) -> Response:
    # 303: the browser follows with a GET, and a reload does not post again.
    return redirect(url_for("conversations.conversation", conversation_id=conversation_id),
                    code=303)
