"""The admin API (SPEC §3): a Flask blueprint over the use cases of zapreply.actions.

It lives beside the receiver, not inside it. The receiver answers every WhatsApp message and
stays small: verify, parse, filter, look up, enqueue. The admin API is an operator's tool
with most of the code (configs, conversations, events, replay, personal data), so it is its
own package, and the receiver loads it only when ADMIN_TOKEN is set: without a token
`webhook_app.create_app()` mounts a stub that answers 503 under /api, and neither the admin
routes nor the actions they call are imported into the process that takes webhooks. With a token
it is mounted under /api in the receiver, as it always was, so a single deployment needs
nothing more; to serve it elsewhere (another port, a private network, fewer workers), run
it on its own with `gunicorn 'admin_api:create_app()'` and leave ADMIN_TOKEN unset for the
receiver.

It imports the actions, the rules and storage; never the reply pipeline, the LLM boundary or
the worker.
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def mount(app: Flask) -> None:
    """Register the admin API on `app` under /api, or with no ADMIN_TOKEN a stub that
    answers every /api request 503 without loading the admin code."""
    from webhook_app.extension import runtime_of

    if runtime_of(app).settings.admin_token:
        from admin_api.views import bp

        app.register_blueprint(bp)
    else:
        from admin_api.auth import disabled_blueprint

        app.register_blueprint(disabled_blueprint())


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The admin API on its own, at the same URLs (/api/...): `gunicorn
    'admin_api:create_app()'`. `config` overrides environment settings by name, for this app
    alone (webhook_app.extension)."""
    from webhook_app import extension
    from webhook_app.errors import register_error_handlers
    from zapreply.broker.queue import Publisher
    from zapreply.settings import load

    settings = load({k: str(v) for k, v in (config or {}).items()})
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    extension.init_app(app, settings)
    # Replaying a run publishes a reply task.
    app.extensions["zapreply.publisher"] = Publisher(settings)
    register_error_handlers(app)
    mount(app)
    return app
