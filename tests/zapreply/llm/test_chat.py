"""The LLM boundary's HTTP client, called against the LLM stand-in through litellm."""

from __future__ import annotations

import logging
import threading

import pytest

from zapreply import settings as settings_module
from zapreply.llm import chat as boundary
from zapreply.net import http


@pytest.fixture
def slots(db, base_env, monkeypatch):  # type: ignore[no-untyped-def]
    """A worker with 150 slots, and the LLM client made afresh for it."""
    settings_module.override(settings_module.load({**base_env, "WORKER_CONCURRENCY": "150"}))
    http.forget("llm")
    yield 150
    http.forget("llm")
    settings_module.override(settings_module.load(base_env))


def test_a_worker_can_have_more_calls_in_flight_than_httpx_allows_by_default(slots, llm):
    # httpx's default pool (litellm's own client) holds at most 100 connections a process.
    calls = 120
    llm.delay_seconds = 1.0
    failures: list[BaseException] = []

    def call() -> None:
        # Twice: the second round goes out on the first round's connections, kept open.
        for _ in range(2):
            try:
                boundary.complete(model="openai/stub", tools=None, timeout=30,
                                  messages=[{"role": "user", "content": "oi"}])
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    threads = [threading.Thread(target=call) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert not failures
    assert llm.max_in_flight == calls


def test_the_clients_keep_a_connection_open_for_every_slot(slots) -> None:
    # httpx's default keeps 20 open: past 20 calls at once, each opens and drops a connection
    # (a TCP and TLS handshake per call to a real provider).
    pools = []

    def look() -> None:
        pools.append(boundary._http_handler_for("openai/gpt-4o-mini").client._transport._pool)

    threads = [threading.Thread(target=look) for _ in range(http.SHARDS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One thread per shard, dealt in turn: every shard's client, each with its share.
    assert len({id(pool) for pool in pools}) == http.SHARDS
    assert sum(pool._max_connections for pool in pools) >= slots
    assert sum(pool._max_keepalive_connections for pool in pools) >= slots
    assert all(pool._max_connections == pool._max_keepalive_connections for pool in pools)


def test_only_calls_through_litellms_http_handler_get_the_client(slots) -> None:
    handler = boundary._http_handler_for("openai/gpt-4o-mini")
    assert handler is not None and handler is boundary._http_handler_for("openai/other-model")
    # Other providers take a client of their own kind (an SDK's) in the same argument.
    assert boundary._http_handler_for("anthropic/claude-3-5-sonnet-20240620") is None
    assert boundary._http_handler_for("azure/some-deployment") is None


def test_a_call_logs_nothing_from_litellm_below_warning(slots, llm, caplog) -> None:
    caplog.set_level(logging.INFO)  # a worker at LOG_LEVEL=INFO
    boundary.complete(model="openai/stub", tools=None, timeout=30,
                      messages=[{"role": "user", "content": "oi"}])
    chatter = [r for r in caplog.records if r.name.startswith("LiteLLM")]
    assert chatter == []
    assert logging.getLogger("LiteLLM").isEnabledFor(logging.WARNING)
