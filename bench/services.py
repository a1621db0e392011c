"""The bench's own PostgreSQL database (and role) and Redis db on the machine's shared servers:
created fresh, migrated, and dropped (or flushed) afterwards. Nothing else on those servers is
touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from bench.procs import cpu_seconds, tree_cpu_seconds


def sqlalchemy_url(server_url: str, role: str, database: str) -> str:
    """postgresql://user@host:port/db -> postgresql+psycopg://<role>@host:port/<database>"""
    parts = urlsplit(server_url)
    netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return f"postgresql+psycopg://{netloc}/{database}"


def recreate_database(server_url: str, name: str, connection_limit: int) -> None:
    """A fresh database owned by a fresh login role of the same name, the role limited to
    `connection_limit` connections: the app sizes its pools from WORKER_CONCURRENCY, and a
    superuser's connections are never limited, so without a role of its own the bench could
    take every connection of a server others use too. Authentication as set up on the
    server (trust on this machine)."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        _drop(conn, name)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(
            sql.Identifier(name), sql.Literal(connection_limit)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(name)))


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        _drop(conn, name)


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def migrate(root: Path, database_url: str, log: Path) -> None:
    """`alembic upgrade head` from the repo root, as deployed."""
    with open(log, "wb") as out:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=root,
            env={**os.environ, "DATABASE_URL": database_url}, stdout=out,
            stderr=subprocess.STDOUT, timeout=120, check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{log.read_text()[-3000:]}")


def flush_redis_db(url: str) -> None:
    """Empty the bench's own Redis db (the number in the URL), nothing else."""
    redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()


def drop_queue(url: str, queue: str) -> int:
    """Delete the tasks waiting in `queue`; kombu's bindings in the same db stay."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    waiting = int(client.llen(queue))
    client.delete(queue)
    return waiting


def redis_cpu_seconds(url: str) -> float:
    """CPU of the whole Redis server (it is shared: other users' work counts too)."""
    info = redis.Redis.from_url(url, socket_connect_timeout=3).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def postgres_backend_cpu(server_url: str, database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend now connected to `database`, by pid."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))]
    return {pid: cpu_seconds(pid) for pid in pids}


def postgres_server_cpu(server_url: str) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, every live process under it and every
    backend it has reaped (a backend that ended mid-run still counts; it is shared: other
    users' work counts too)."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    stat = Path(f"/proc/{backend}/stat").read_text()
    postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    return tree_cpu_seconds(postmaster)

