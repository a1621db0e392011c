"""zapreply.net.http: clients shared by a process's threads, a few per purpose."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from zapreply.net import http


@pytest.fixture
def fresh():  # type: ignore[no-untyped-def]
    http.forget("test")
    yield
    http.forget("test")


def _in_threads(count: int, work):  # type: ignore[no-untyped-def]
    results: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        value = work()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_thread_always_gets_the_same_client(fresh) -> None:
    def twice() -> tuple[object, object]:
        return (http.shared_client("test", httpx.Client),
                http.shared_client("test", httpx.Client))

    for first, second in _in_threads(40, twice):
        assert first is second


def test_threads_spread_evenly_over_the_shards(fresh) -> None:
    made = Counter(id(c) for c in _in_threads(3 * http.SHARDS,
                                              lambda: http.shared_client("test", httpx.Client)))
    assert len(made) == http.SHARDS
    assert set(made.values()) == {3}


def test_each_instance_is_made_once_however_many_threads_ask_at_once(fresh) -> None:
    calls = Counter[int]()
    lock = threading.Lock()
    start = threading.Barrier(64)

    def make() -> object:
        with lock:
            calls[http.shard()] += 1
        return object()

    def ask() -> object:
        start.wait()
        return http.shared("test", make)

    results = _in_threads(64, ask)
    assert len({id(r) for r in results}) == http.SHARDS
    assert set(calls.values()) == {1}


def test_every_client_shares_one_tls_context(fresh) -> None:
    context = http.ssl_context()
    assert http.ssl_context() is context
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    # Made inside a client's factory, as the boundaries do: no deadlock, the same context.
    clients = _in_threads(http.SHARDS, lambda: http.shared_client(
        "test", lambda: httpx.Client(verify=http.ssl_context())))
    assert {id(c._transport._pool._ssl_context) for c in clients} == {id(context)}


def test_a_shards_share_of_connections_covers_the_whole(fresh) -> None:
    for total in (1, 15, 16, 17, 150, 300):
        assert http.per_shard_limit(total) * http.SHARDS >= total + http.SHARDS
    assert http.per_shard_limit(0) >= 1
