"""Signing in and out, who may see what, and CSRF.

A session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure behind TLS) holding the
operator's id and a fingerprint of their password hash: disabling an operator or resetting
the password ends their sessions at the next request. Every page but /login needs a
signed-in operator; configs need an admin. Every POST carries the session's CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from console_app.errors import page
from zapreply.actions import operators
from zapreply.storage.db import session_scope
from zapreply.storage.models import Operator, OperatorRole

bp = Blueprint("auth", __name__)

CSRF_FIELD = "csrf_token"
CSRF_REFUSED = "This form has no valid security token (it may have expired). Reload the " \
               "page and try again."
# /metrics checks its own bearer token (console_app.metrics).
_PUBLIC = {"auth.login", "static", "metrics.scrape"}


def init_app(app: Flask) -> None:
    app.before_request(_load_operator)
    app.before_request(_check_csrf)
    app.context_processor(lambda: {"csrf_token": csrf_token, "operator": g.get("operator"),
                                   "is_admin": is_admin()})


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _check_csrf() -> Any:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return page(CSRF_REFUSED, 400)
    return None


def _load_operator() -> Any:
    g.operator = None
    operator_id = session.get("operator_id")
    if operator_id is not None:
        with session_scope() as db:
            operator = db.get(Operator, operator_id)
            if operator is not None and operator.is_active and \
                    session.get("version") == operators.session_version(operator):
                g.operator = operator
            else:
                session.clear()
    if g.operator is None and request.endpoint not in _PUBLIC:
        if request.endpoint == "live.stream":
            return page("Sign in again.", 401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


def is_admin() -> bool:
    operator = g.get("operator")
    return operator is not None and operator.role == OperatorRole.ADMIN


def admin_only(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not is_admin():
            return page("Only an admin may open this page.", 403)
        return view(*args, **kwargs)

    return guarded


def actor() -> str:
    return operators.actor_of(g.operator)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.operator is not None:
            return redirect(target)
        return render_template("login.html", next=target, error=None)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    try:
        with session_scope() as db:
            operator = operators.sign_in(db, username, password,
                                         remote_addr=request.remote_addr or "unknown")
            version = operators.session_version(operator) if operator else None
            operator_id = operator.id if operator else None
    except operators.Throttled as exc:
        return render_template("login.html", next=target, error=exc.message,
                               username=username), 429
    if operator_id is None:
        return render_template("login.html", next=target, username=username,
                               error="Wrong username or password."), 401
    session.clear()
    session.permanent = True
    session.update(operator_id=operator_id, version=version, csrf=secrets.token_urlsafe(32))
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    with session_scope() as db:
        operators.sign_out(db, db.merge(g.operator, load=False))
    session.clear()
    return redirect(url_for("auth.login"))


def _safe_next(value: str | None) -> str:
    """Only a path of this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return url_for("conversations.inbox")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return url_for("conversations.inbox")
    return value
