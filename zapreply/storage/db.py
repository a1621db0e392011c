"""Engines and sessions, for the receiver, the workers and the CLI.

Each app owns a `Database` (zapreply.runtime); `session_scope()`, `autocommit()` and
`get_engine()` use the one bound for the running request, task or command, else the process's
own, made from its settings on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from zapreply.settings import Settings, get_settings


def ensure_data_dir() -> Path:
    """ZAPREPLY_DATA_DIR, made if missing, readable by its owner only (0700): it holds the
    conversations and the configs' tokens."""
    data_dir = get_settings().data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _owner_only(data_dir, 0o700)
    return data_dir


def _owner_only(path: Path, mode: int) -> None:
    # Only what this user owns: a directory mounted by someone else (a volume owned by root
    # but writable by us) is theirs to set, and chmod would fail on it.
    if path.stat().st_uid == os.getuid():
        os.chmod(path, mode)


def private_sqlite_file(url: str) -> None:
    """Create an SQLite URL's file (and tighten an existing one, its -wal, -shm and -journal)
    as readable and writable by its owner only (0600) before SQLite opens it: SQLite creates
    a file with the process's umask (often 0644), and its -wal and -shm with the mode of the
    database file. Its directory is made too; the data directory, 0700."""
    database = make_url(url.removeprefix("sqla+")).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).resolve()
    if path.parent == get_settings().data_dir:
        ensure_data_dir()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for candidate in (path, *(path.with_name(path.name + tail)
                               for tail in ("-wal", "-shm", "-journal"))):
        if candidate.exists():
            _owner_only(candidate, 0o600)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 2,
                pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        # hide_parameters: statements may carry a config's messages-API token; errors get logged.
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Receiver, worker and the embedded broker share one file: WAL lets readers and
            # one writer proceed together, busy_timeout waits instead of "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        connect_args={"connect_timeout": 2} if url.startswith("postgresql") else {},
        pool_recycle=1800,
        hide_parameters=True,
    )


class Database:
    """One engine and its session factory, made on first use: an app that never reaches the
    database opens nothing (and creates no SQLite file).

    `pool_size` is the connections kept open; None sizes the pool for a worker's slots.
    `pre_ping` checks each connection with a round trip as it is checked out.
    """

    def __init__(self, settings: Settings, *, pool_size: int | None = None,
                 pre_ping: bool = True) -> None:
        self.url = settings.database_url
        if pool_size is not None:
            self._pool = (pool_size, max(pool_size // 5, 2))
        else:
            # A worker's threads hold a connection only for short transactions, never across
            # an LLM call. No overflow: SQLAlchemy closes an overflow connection as soon as it
            # is returned, so a saturated worker that keeps needing one opens and closes a
            # PostgreSQL backend per transaction (a fork, a login, cold caches). All of the
            # room is kept instead; past it, a thread waits for a connection.
            self._pool = (min(settings.worker_concurrency, 25), 0)
        self.pre_ping = pre_ping
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    @property
    def pool_size(self) -> int:
        return self._pool[0]

    @property
    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    size, overflow = self._pool
                    self._engine = make_engine(self.url, pool_size=size, max_overflow=overflow,
                                               pre_ping=self.pre_ping)
                engine = self._engine
        return engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        factory = self._sessions
        if factory is None:
            factory = sessionmaker(self.engine, expire_on_commit=False)
            self._sessions = factory
        return factory

    def dispose(self, *, close: bool = True) -> None:
        """Drop the pooled connections; `close=False` after a fork, where they belong to the
        parent and must be forgotten, not closed."""
        if self._engine is not None:
            self._engine.dispose(close=close)


# The database of the app whose request, task or command is running (zapreply.runtime binds
# it); with none bound, one per URL for the process's own settings, made on first use.
bound_database: ContextVar[Database | None] = ContextVar("zapreply_database", default=None)
_process_databases: dict[str, Database] = {}
_process_lock = threading.Lock()


def current_database() -> Database:
    bound = bound_database.get()
    if bound is not None:
        return bound
    settings = get_settings()
    database = _process_databases.get(settings.database_url)
    if database is None:
        with _process_lock:
            database = _process_databases.setdefault(settings.database_url, Database(settings))
    return database


def get_engine() -> Engine:
    return current_database().engine


def session_factory() -> sessionmaker[Session]:
    return current_database().sessions


def reset_engines() -> None:
    """Drop the pooled connections of the process's own databases: after a fork, or when
    tests swap settings. An app's own database is its app's to dispose."""
    with _process_lock:
        for database in _process_databases.values():
            database.dispose(close=False)
        _process_databases.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    session = current_database().sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A pooled connection in autocommit, for a single statement that is atomic by itself:
    no BEGIN and COMMIT round trips. The pool restores the connection's isolation level."""
    with current_database().engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
