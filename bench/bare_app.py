"""The baseline for webhook ingest: a Flask app that only parses the JSON body and answers.

    gunicorn 'bench.bare_app:create_app()'

SPEC §7 asks the receiver to reach 0.6 × this app's rate under the same gunicorn settings. It
reads the body and answers the way the receiver does on success, and does nothing else: no
signature check, no config lookup, no queue.
"""

from __future__ import annotations

import json

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/wuzapi")
    @app.post("/webhooks/wuzapi/<path:_>")
    def receive(_: str = "") -> ResponseReturnValue:
        envelope = json.loads(request.get_data(cache=False))
        return jsonify(status="queued", message_id=envelope["event"]["Info"]["ID"])

    return app
