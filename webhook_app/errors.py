from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from zapreply.metrics import series

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        messages = {
            408: "request body did not arrive within the read timeout",
            413: "request body is larger than the limit",
        }
        message = messages.get(error.code or 500, error.description or error.name)
        if request.endpoint == "webhooks.receive":
            series.webhook_refused(error.code or 500)
        return jsonify(error=message), error.code

    @app.errorhandler(Exception)
    def unexpected(error: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return jsonify(error="internal error"), 500
