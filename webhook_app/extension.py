"""The Flask side of zapreply.runtime: an app's Runtime, kept in `app.extensions` and bound
around each of its requests, so that `get_settings()` and `session_scope()` in a view, and in
everything it calls, answer with that app's settings and database.

The binding wraps the app's WSGI callable: two context variables set and reset per request,
nothing built (the receiver's CPU per webhook is measured), and it holds for error handlers
and teardown too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from zapreply.runtime import Runtime
from zapreply.settings import Settings

EXTENSION = "zapreply.runtime"


def init_app(app: Flask, settings: Settings, *, pool_size: int | None = None) -> Runtime:
    """Give `app` a Runtime built from `settings` (`pool_size`: see Runtime.build)."""
    runtime = Runtime.build(settings, pool_size=pool_size)
    app.extensions[EXTENSION] = runtime
    serve = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        tokens = runtime.bind()
        try:
            return serve(environ, start_response)
        finally:
            runtime.unbind(tokens)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
    return runtime


def runtime_of(app: Flask) -> Runtime:
    return app.extensions[EXTENSION]
