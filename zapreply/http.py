"""One long-lived httpx client per purpose, made on first use and shared by a process's
threads (keep-alive connections; httpx.Client is thread-safe)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()


def shared_client(name: str, make: Callable[[], httpx.Client]) -> httpx.Client:
    client = _clients.get(name)
    if client is None:
        with _lock:
            client = _clients.get(name)
            if client is None:
                client = _clients[name] = make()
    return client
