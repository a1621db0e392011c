"""/healthz says the process is up; /readyz says the database and broker answer."""

from __future__ import annotations

import time

import pytest

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
        "status": "ok", "checks": {"database": "ok", "broker": "ok"},
    }


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
