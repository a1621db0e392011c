from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from zapreply.settings import get_settings
from zapreply.storage.db import get_engine

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    checks: dict[str, str | int] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    try:
        current_app.extensions["zapreply.publisher"].ping()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: broker check failed: %s", type(exc).__name__)
        checks["broker"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        return jsonify(status="unavailable", checks=checks), 503
    # Still ready with a deep queue (webhooks are taken and kept), but replies lag behind it:
    # "degraded" tells an operator to add workers before customers notice.
    status = "ok"
    try:
        depth = current_app.extensions["zapreply.publisher"].queue_depth()
        checks["queue_depth"] = depth
        if depth >= get_settings().queue_degraded_depth:
            status = "degraded"
    except Exception as exc:  # noqa: BLE001 - the broker took a ping; its count is extra
        log.warning("readiness: queue depth unknown: %s", type(exc).__name__)
        checks["queue_depth"] = "unknown"
    return jsonify(status=status, checks=checks), 200
