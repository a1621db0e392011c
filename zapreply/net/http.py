"""Long-lived HTTP clients, shared by a process's threads.

A worker runs hundreds of threads, each with at most one request in flight. One httpx client
for all of them would be the obvious choice, but httpcore's pool walks every connection it
holds, under one lock, on each request and each response; with hundreds of connections in one
pool that walk costs more CPU than the request itself. So each purpose has a few clients
(`SHARDS`), each thread always uses the same one, and each client's pool stays small. Threads
are dealt to shards in the order they first ask, so a process's threads spread evenly.

Every client is handed one `ssl.SSLContext` for the process: `httpx.Client()` would otherwise
load the system's certificate store for each client (~45 ms of CPU)."""

from __future__ import annotations

import itertools
import math
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")

SHARDS = 16

_made: dict[tuple[str, int], object] = {}
_lock = threading.Lock()
_next_shard = itertools.count()
_thread = threading.local()

_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """The process's TLS context: the system's certificate store (or SSL_CERT_FILE /
    SSL_CERT_DIR, as httpx reads them), loaded once."""
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                _context = httpx.create_ssl_context()
    return _context


def shard() -> int:
    """The calling thread's shard, fixed for the thread's life."""
    index = getattr(_thread, "shard", None)
    if index is None:
        index = _thread.shard = next(_next_shard) % SHARDS
    return index


def per_shard_limit(total: int) -> int:
    """One shard's share of `total` connections: an even share and one more, since a
    process's threads need not divide evenly (a thread outside the pool may call too)."""
    return math.ceil(max(total, 1) / SHARDS) + 1


def shared(name: str, make: Callable[[], T]) -> T:
    """The calling thread's instance of `name`, made on first use of its shard."""
    key = (name, shard())
    made = _made.get(key)
    if made is None:
        with _lock:
            made = _made.get(key)
            if made is None:
                made = _made[key] = make()
    return made  # type: ignore[return-value]


def shared_client(name: str, make: Callable[[], httpx.Client]) -> httpx.Client:
    return shared(name, make)


def forget(name: str) -> None:
    """Drop every instance of `name` (the next use makes new ones); for tests and settings
    that change."""
    with _lock:
        for key in [key for key in _made if key[0] == name]:
            del _made[key]


def origin(url: Any) -> tuple[str, str, int | None] | None:
    """Scheme, host and port of a URL (the port its scheme implies when not written): where a
    stored credential is sent."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port
