"""Engine and sessions, shared by the receiver, the workers and the CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from zapreply.settings import get_settings


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


_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


_pool_size: int | None = None
_pre_ping = True


def set_pool_size(size: int) -> None:
    """Connections this process keeps; a receiver process needs a few, a worker one per slot."""
    global _pool_size
    _pool_size = size


def skip_pre_ping() -> None:
    """No liveness round trip at each checkout (a worker's choice: it pays one per transaction,
    and a connection that died with the server fails the task, which is retried)."""
    global _pre_ping
    _pre_ping = False


def get_engine() -> Engine:
    settings = get_settings()
    engine = _engines.get(settings.database_url)
    if engine is None:
        if _pool_size is not None:
            size, overflow = _pool_size, max(_pool_size // 5, 2)
        else:
            # A worker's threads hold a connection only for short transactions, never across
            # an LLM call. No overflow: SQLAlchemy closes an overflow connection as soon as it
            # is returned, so a saturated worker that keeps needing one opens and closes a
            # PostgreSQL backend per transaction (a fork, a login, cold caches). All of the
            # room is kept instead; past it, a thread waits for a connection.
            size, overflow = min(settings.worker_concurrency, 25), 0
        engine = make_engine(settings.database_url, pool_size=size, max_overflow=overflow,
                             pre_ping=_pre_ping)
        _engines[settings.database_url] = engine
    return engine


def session_factory() -> sessionmaker[Session]:
    url = get_settings().database_url
    factory = _sessionmakers.get(url)
    if factory is None:
        factory = sessionmaker(get_engine(), expire_on_commit=False)
        _sessionmakers[url] = factory
    return factory


def reset_engines() -> None:
    """Drop pooled connections: after a fork, or when tests swap settings."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _sessionmakers.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    session = session_factory()()
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
    with get_engine().connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
