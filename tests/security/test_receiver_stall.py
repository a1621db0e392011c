"""Clients that try to stall the receiver, against gunicorn started as deployed (the contract
command with gunicorn.conf.py from the repo root) on the tests' PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.conftest import signed
from tests.e2e import fixture_body, fresh, post
from tests.factories import make_config
from tests.processes import Receiver, free_port
from zapreply.broker.queue import HANDLE_INBOUND, QUEUE

# Short, so that a cut-off is seen within the test; the trickling senders below need far longer
# than this to send their bodies.
READ_TIMEOUT_SECONDS = 3.0
# What a test waits at most for an answer that should come at once.
FAILURE_TIMEOUT_SECONDS = 10.0

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[redis.Redis]:
    """A Redis of this module's own: what is queued here is only what these tests sent (the
    suite's shared Redis databases can be another run's at the same time)."""
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + FAILURE_TIMEOUT_SECONDS
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "redis-server failed"
            time.sleep(0.05)
    yield client
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def receiver(migrated: str, base_env: dict[str, str], broker: redis.Redis,
             tmp_path_factory) -> Iterator[Receiver]:
    port = broker.connection_pool.connection_kwargs["port"]
    process = Receiver(
        {**os.environ, **base_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
         "WEBHOOK_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS)},
        free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log",
    )
    yield process
    process.stop()


@pytest.fixture
def config(db: None, wuzapi, broker: redis.Redis) -> int:  # type: ignore[no-untyped-def]
    broker.delete(QUEUE)
    return make_config(wuzapi.url)


@pytest.fixture
def queued(broker: redis.Redis):  # type: ignore[no-untyped-def]
    """Names of the tasks the receiver queued."""
    return lambda: [json.loads(raw)["headers"]["task"] for raw in broker.lrange(QUEUE, 0, -1)]


class TricklingSender:
    """A client that sends a whole signed webhook's headers, then its body one byte every
    `interval` seconds, until the receiver answers or closes."""

    def __init__(self, url: str, body: bytes, interval: float = 0.1) -> None:
        address = urlsplit(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        head = (
            "POST /webhooks/wuzapi HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-hmac-signature: {signed(body)['x-hmac-signature']}\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        self.started_at = time.monotonic()
        self.body = body
        self.interval = interval
        self.answer = b""
        self.answered_at: float | None = None
        self.sending = threading.Event()
        self.finished = threading.Event()
        threading.Thread(target=self._trickle, daemon=True).start()

    def _trickle(self) -> None:
        self.sock.settimeout(self.interval)
        try:
            for sent in range(len(self.body)):
                self.sock.sendall(self.body[sent:sent + 1])
                if sent == 2:
                    self.sending.set()
                try:
                    # Waiting for an answer is what paces the bytes.
                    answer = self.sock.recv(65536)
                except TimeoutError:
                    continue
                self.answered_at = time.monotonic()
                self.sock.settimeout(1)
                while answer:
                    self.answer += answer
                    answer = self.sock.recv(65536)
                return
        except OSError:
            pass
        finally:
            self.sock.close()
            self.sending.set()
            self.finished.set()

    @property
    def status(self) -> int | None:
        if not self.answer.startswith(b"HTTP/1.1 "):
            return None
        return int(self.answer[9:12])


def test_a_signed_webhook_is_queued_while_six_senders_trickle_their_bodies(
    receiver: Receiver, config: int, queued,  # type: ignore[no-untyped-def]
) -> None:
    senders = [TricklingSender(receiver.url, fresh(fixture_body("message_text.json")))
               for _ in range(6)]
    for sender in senders:
        # Each is in its body, on a thread of the receiver, before the webhook is sent.
        assert sender.sending.wait(FAILURE_TIMEOUT_SECONDS)
        assert sender.answered_at is None

    response = post(receiver.url, fresh(fixture_body("message_text.json")))
    answered_at = time.monotonic()

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    for sender in senders:
        assert sender.finished.wait(READ_TIMEOUT_SECONDS + FAILURE_TIMEOUT_SECONDS)
        assert sender.status == 408
        # The webhook did not wait for the trickling senders to be cut off.
        assert answered_at < sender.answered_at
    assert queued() == [HANDLE_INBOUND]
    assert "WORKER TIMEOUT" not in receiver.log_path.read_text(errors="replace")


def test_a_trickling_body_is_cut_off_with_408_after_the_read_timeout_and_nothing_is_queued(
    receiver: Receiver, config: int, queued,  # type: ignore[no-untyped-def]
) -> None:
    sender = TricklingSender(receiver.url, fresh(fixture_body("message_text.json")))

    assert sender.finished.wait(READ_TIMEOUT_SECONDS + FAILURE_TIMEOUT_SECONDS)
    assert sender.status == 408
    assert b"did not arrive within the read timeout" in sender.answer
    assert sender.answered_at is not None
    assert sender.answered_at - sender.started_at >= READ_TIMEOUT_SECONDS
    assert queued() == []
    assert httpx.get(f"{receiver.url}/healthz", timeout=FAILURE_TIMEOUT_SECONDS).status_code == 200


def test_a_body_of_a_million_empty_form_fields_is_refused_and_the_receiver_stays_healthy(
    receiver: Receiver, config: int, queued,  # type: ignore[no-untyped-def]
) -> None:
    body = b"a=&" * 1_000_000
    response = httpx.post(f"{receiver.url}/webhooks/wuzapi", content=body,
                          headers={"Content-Type": FORM, **signed(body)},
                          timeout=FAILURE_TIMEOUT_SECONDS)

    assert response.status_code == 400
    assert "more than" in response.json()["error"]
    assert queued() == []
    assert httpx.get(f"{receiver.url}/healthz", timeout=FAILURE_TIMEOUT_SECONDS).status_code == 200
    # And it still takes webhooks.
    assert post(receiver.url, fresh(fixture_body("message_text.json"))).json()["status"] == "queued"


def test_a_sender_trickling_its_headers_is_disconnected_after_the_read_timeout(
    receiver: Receiver, config: int,
) -> None:
    address = urlsplit(receiver.url)
    head = b"POST /webhooks/wuzapi HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 4000
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        closed_at = None
        for sent in range(len(head)):
            try:
                sock.sendall(head[sent:sent + 1])
                if sock.recv(65536) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                if time.monotonic() - started > READ_TIMEOUT_SECONDS + FAILURE_TIMEOUT_SECONDS:
                    break
            except OSError:
                closed_at = time.monotonic()
                break

    assert closed_at is not None, "the receiver kept reading the headers"
    assert closed_at - started >= READ_TIMEOUT_SECONDS
    assert httpx.get(f"{receiver.url}/healthz", timeout=FAILURE_TIMEOUT_SECONDS).status_code == 200
