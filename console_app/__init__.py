"""The operator console: a server-rendered web app (Flask, Jinja, one CSS file and a little
JavaScript) for the business's attendants and the operator. Sign-in, the inbox, each
conversation with its runs, failed runs, the dashboard, workflow configs and their
playground; /metrics for Prometheus.

A WSGI app of its own, `gunicorn 'console_app:create_app()'`, so the webhook receiver stays
thin (it never imports this package). Every action goes through zapreply.actions, the use
cases the admin API and the CLI share. Imports the actions, the rules, storage and the
broker's publisher; never the reply pipeline, the LLM boundary or the worker.
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """`config` overrides environment settings by name (e.g. {"DATABASE_URL": ...})."""
    from console_app import (
        auth,
        configs,
        context,
        conversations,
        dashboard,
        errors,
        live,
        metrics,
        playground,
        runs,
    )

    app = Flask(__name__)
    context.init_app(app, config)
    errors.init_app(app)
    auth.init_app(app)
    live.init_app(app)
    metrics.init_app(app)
    for blueprint in (auth.bp, conversations.bp, runs.bp, dashboard.bp, configs.bp,
                      playground.bp, live.bp, metrics.bp):
        app.register_blueprint(blueprint)
    return app
