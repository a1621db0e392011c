"""Failed and retrying reply runs across every conversation; replay one or many."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from console_app import context, forms
from console_app.auth import actor
from zapreply.actions import runs as run_actions
from zapreply.actions.errors import Invalid
from zapreply.broker.queue import REPLY
from zapreply.storage.db import session_scope

bp = Blueprint("runs", __name__)

SHOW = {"all": None, "failed": False, "retrying": True}


@bp.get("/runs")
def runs() -> str:
    show = request.args.get("show", "all")
    if show not in SHOW:
        raise Invalid("'show' must be all, failed or retrying")
    before_id = forms.optional_id("before")
    with session_scope() as session:
        found = run_actions.list_troubled_runs(session, retrying=SHOW[show], before_id=before_id)
        return render_template("runs.html", page=found, show=show)


@bp.post("/runs/replay")
def replay_many() -> Response:
    run_ids = forms.ids("run")
    with session_scope() as session:
        done = run_actions.replay_runs(session, run_ids, actor=actor())
    for conversation_id in done.conversation_ids:
        context.publisher().send(REPLY, args=[conversation_id])
    replayed = len(set(run_ids)) - len(done.refused)
    flash(f"{replayed} run{'s' if replayed != 1 else ''} replayed.")
    for run_id, reason in done.refused.items():
        flash(f"Run {run_id} not replayed: {reason}", "error")
    return redirect(url_for("runs.runs"), code=303)
