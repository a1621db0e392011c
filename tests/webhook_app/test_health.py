"""/healthz says the process is up; /readyz says the database and broker answer."""

from __future__ import annotations

import time

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.webhook_app.test_webhooks import DEAD_BROKER, DEAD_DATABASE, clients_with_settings

client_with = pytest.fixture(name="client_with")(clients_with_settings)

# Kubernetes times a probe out after 1 s unless told otherwise.
PROBE_SECONDS = 1.0


def test_healthz_answers_while_the_process_is_up(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_needs_no_dependency(client_with) -> None:
    client = client_with(DATABASE_URL=DEAD_DATABASE, CELERY_BROKER_URL=DEAD_BROKER)
    assert client.get("/healthz").status_code == 200


def test_readyz_is_ready_with_the_database_and_broker_up(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok", "checks": {"database": "ok", "broker": "ok", "queue_depth": 0},
    }


def test_readyz_says_degraded_but_ready_once_the_redis_queue_is_deep(client_with) -> None:
    client = client_with(QUEUE_DEGRADED_DEPTH="3")
    queue = redis.Redis.from_url(REDIS_URL)
    queue.lpush("zapreply", "waiting-1", "waiting-2")
    try:
        shallow = client.get("/readyz")
        assert shallow.status_code == 200
        assert shallow.get_json()["status"] == "ok"
        assert shallow.get_json()["checks"]["queue_depth"] == 2

        queue.lpush("zapreply", "waiting-3")
        deep = client.get("/readyz")
        # The receiver still takes webhooks: degraded is not "unavailable".
        assert deep.status_code == 200
        assert deep.get_json() == {
            "status": "degraded",
            "checks": {"database": "ok", "broker": "ok", "queue_depth": 3},
        }
    finally:
        queue.delete("zapreply")


def test_readyz_counts_the_embedded_brokers_queue_through_kombu(client_with, tmp_path) -> None:
    client = client_with(CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                         QUEUE_DEGRADED_DEPTH="2")
    # Nothing published yet: the queue does not exist, and that is an empty queue.
    assert client.get("/readyz").get_json()["checks"]["queue_depth"] == 0

    publisher = client.application.extensions["zapreply.publisher"]
    publisher.send("replies.reply", args=[1])
    assert client.get("/readyz").get_json() == {
        "status": "ok", "checks": {"database": "ok", "broker": "ok", "queue_depth": 1},
    }
    publisher.send("replies.reply", args=[2])
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < PROBE_SECONDS
    assert response.status_code == 200
    assert response.get_json()["status"] == "degraded"
    assert response.get_json()["checks"]["queue_depth"] == 2


def test_readyz_is_unavailable_fast_with_the_broker_down(client_with) -> None:
    client = client_with(CELERY_BROKER_URL=DEAD_BROKER)
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < PROBE_SECONDS
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable", "checks": {"database": "ok", "broker": "unavailable"},
    }


def test_readyz_is_unavailable_fast_with_the_database_down(client_with) -> None:
    client = client_with(DATABASE_URL=DEAD_DATABASE)
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < PROBE_SECONDS
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable", "checks": {"database": "unavailable", "broker": "ok"},
    }


def test_readyz_recovers_once_the_dependencies_answer_again(client_with) -> None:
    # A failed check must not leave a broken pooled connection behind.
    assert client_with(DATABASE_URL=DEAD_DATABASE) \
        .get("/readyz").status_code == 503
    assert client_with().get("/readyz").status_code == 200
