"""What an app runs on: one settings object and the database built from it.

Each front door builds its `Runtime` once and keeps it: the receiver and the admin API in
`app.extensions` (webhook_app.extension), the worker as an attribute of its Celery app, a CLI
command for its own length. While one is bound, for a request, a task or a command,
`get_settings()` and `session_scope()` anywhere below read from it; with none bound they read
the process's own, from the environment. Binding is a context variable set and reset, so two
apps with different settings live side by side in one process and no app changes a global.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from dataclasses import dataclass

from zapreply.settings import Settings, bound_settings
from zapreply.storage.db import Database, bound_database

Tokens = tuple[Token[Settings | None], Token[Database | None]]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database: Database

    @classmethod
    def build(cls, settings: Settings, *, pool_size: int | None = None,
              pre_ping: bool = True) -> Runtime:
        """`pool_size`: the connections this process keeps (None: one per worker slot, up to
        25); `pre_ping`: a liveness round trip at each checkout."""
        return cls(settings, Database(settings, pool_size=pool_size, pre_ping=pre_ping))

    def bind(self) -> Tokens:
        return bound_settings.set(self.settings), bound_database.set(self.database)

    @staticmethod
    def unbind(tokens: Tokens) -> None:
        bound_database.reset(tokens[1])
        bound_settings.reset(tokens[0])

    @contextmanager
    def bound(self) -> Iterator[Runtime]:
        tokens = self.bind()
        try:
            yield self
        finally:
            self.unbind(tokens)
