"""The console's settings and publisher, made once per app and read through `settings()` and
`publisher()`: the one place the console reaches for them."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, current_app

from zapreply import settings as settings_module
from zapreply.broker.queue import Publisher
from zapreply.storage.db import ensure_data_dir

SESSION_HOURS = 12


def init_app(app: Flask, config: dict[str, Any] | None) -> None:
    settings = settings_module.load({k: str(v) for k, v in (config or {}).items()})
    settings_module.override(settings)
    app.config["ZAPREPLY_SETTINGS"] = settings
    app.config.update(
        SECRET_KEY=settings.console_secret_key or _stored_secret_key(),
        SESSION_COOKIE_NAME="zapreply_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.console_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        # Forms only: a config's system prompt is the largest thing posted.
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    # Replaying a run and writing as the business publish tasks.
    app.extensions["zapreply.publisher"] = Publisher(settings)


def settings() -> settings_module.Settings:
    return current_app.config["ZAPREPLY_SETTINGS"]


def publisher() -> Publisher:
    return current_app.extensions["zapreply.publisher"]


def _stored_secret_key() -> str:
    """A random key in the data directory (0600), made by the first process that needs it and
    read by the others: the sessions of every console process on this host verify alike."""
    path = ensure_data_dir() / "console-secret-key"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
