"""Who may use the admin API: a bearer token equal to ADMIN_TOKEN; with none set, nobody."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from zapreply.settings import get_settings

DISABLED = "admin API disabled: set ADMIN_TOKEN"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def require_admin_token() -> tuple[Response, int] | None:
    expected = get_settings().admin_token
    if not expected:
        # An empty token must never match an empty bearer.
        return jsonify(error=DISABLED), 503
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), expected.encode("utf-8")
    ):
        response = jsonify(error="missing or invalid bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response, 401
    return None


def disabled_blueprint() -> Blueprint:
    """Stands in for the admin API when ADMIN_TOKEN is unset: every /api request is 503."""
    stub = Blueprint("admin", __name__, url_prefix="/api")

    @stub.route("/", defaults={"path": ""}, methods=_METHODS)
    @stub.route("/<path:path>", methods=_METHODS)
    def disabled(path: str) -> tuple[Response, int]:
        return jsonify(error=DISABLED), 503

    return stub
