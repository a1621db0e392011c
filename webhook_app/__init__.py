from __future__ import annotations

import gc
import logging
from typing import Any

from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The webhook receiver, with the admin API under /api when ADMIN_TOKEN is set
    (admin_api explains why it is loaded only then). `config` overrides environment settings
    by name (e.g. {"DATABASE_URL": ...}) for this app alone: its settings and database are its
    own (webhook_app.extension), and the process's are left as they were."""
    import admin_api
    from webhook_app import extension, health, routing, webhooks
    from webhook_app.errors import register_error_handlers
    from zapreply.broker.queue import Publisher
    from zapreply.settings import load

    settings = load({k: str(v) for k, v in (config or {}).items()})
    if settings.webhook_allow_unsigned:
        logging.getLogger(__name__).warning(
            "WEBHOOK_ALLOW_UNSIGNED is set: anyone who can reach /webhooks/wuzapi can make the "
            "bot message any number and spend LLM credit. Use it only for local experiments.")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # A gunicorn worker serves at most its threads' requests at once (gunicorn.conf.py), and
    # few of them reach the database (the config cache); the pool opens connections only as
    # they are needed at the same time.
    extension.init_app(app, settings, pool_size=settings.receiver_threads)
    routing.init_app(app, settings)
    app.extensions["zapreply.publisher"] = Publisher(settings)

    register_error_handlers(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    admin_api.mount(app)
    # What the imports built (Flask, SQLAlchemy and the models: ~80,000 objects) lives as long
    # as the process. Out of the collector's sight, a full collection no longer walks it: one
    # took ~50 ms, during which the worker answered nothing.
    gc.freeze()
    return app
