"""Server-side request forgery through media, tried against the running receiver and a real
worker: webhooks (authentic, signed with the suite's key: whoever can post one can forge its
contents) that point the worker's media fetch at an "internal" server on loopback, directly, by
a name that resolves to loopback, through a redirect, and through WuzAPI's download endpoint;
and a media server that drips its bytes to hold the worker."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import fixture_json, running_worker
from tests.e2e import events_of, post
from tests.factories import make_config
from tests.zapreply.net.test_egress import Server

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

SECRET = b"internal-only: db password hunter2"
MEDIA_TIMEOUT = 2.0


def answer(status: str, headers: str = "", body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            f"{headers}\r\n").encode() + body


class DripServer:
    """Media that never finishes: headers, then one byte every 0.25 s. Records how long each
    connection was held open."""

    def __init__(self) -> None:
        self.held: list[float] = []
        self.changed = threading.Condition()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        opened = time.monotonic()
        try:
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                             b"Content-Length: 100000\r\n\r\n")
                for _ in range(240):
                    conn.sendall(b"x")
                    time.sleep(0.25)
        except OSError:
            pass  # the worker hung up
        with self.changed:
            self.held.append(time.monotonic() - opened)
            self.changed.notify_all()

    def wait_for_hang_ups(self, count: int, timeout: float) -> list[float]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.held) >= count, timeout):
                raise AssertionError(f"the worker held {len(self.held)} connection(s) open")
            return list(self.held)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def internal() -> Iterator[Server]:
    server = Server(answer("200 OK", "Content-Type: image/jpeg\r\n", SECRET))
    yield server
    server.close()


@pytest.fixture(scope="module")
def redirector(internal: Server) -> Iterator[Server]:
    server = Server(answer("302 Found", f"Location: http://127.0.0.1:{internal.port}/internal\r\n"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def worker_process(migrated: str, base_env: dict[str, str], tmp_path_factory, internal,
                   redirector, drip) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """A worker that allows, besides its defaults' kind of entries: the name `localhost` on the
    internal server's port (as a careless operator might), and the redirector and the drip
    server as exact origins (standing for an allowed S3 host)."""
    allowed = (f"localhost:{internal.port},http://127.0.0.1:{redirector.port},"
               f"http://127.0.0.1:{drip.port}")
    with running_worker(base_env, tmp_path_factory, "test-ssrf", MEDIA_ALLOWED_HOSTS=allowed,
                        MEDIA_TIMEOUT_SECONDS=str(MEDIA_TIMEOUT), RETRY_BASE_SECONDS="0.1",
                        RETRY_MAX_SECONDS="0.3", LLM_MAX_ATTEMPTS="2"):
        yield


def image_at(url: str, *, direct_path: bool = False) -> dict[str, Any]:
    """An image delivered as WuzAPI's S3 delivery does, its URL replaced by `url`."""
    body = fixture_json("message_image_s3.json")
    body["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    body["s3"]["url"] = url
    image = body["event"]["Message"]["imageMessage"]
    image["URL"] = url
    if not direct_path:
        image.pop("directPath")
    return body


def send(receiver: str, body: dict[str, Any]) -> None:
    response = post(receiver, json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"


def the_model_never_saw_the_secret(llm) -> None:  # type: ignore[no-untyped-def]
    seen = json.dumps(llm.requests)
    assert SECRET.decode() not in seen and base64.b64encode(SECRET).decode() not in seen


def test_a_forged_image_pointing_at_an_internal_server_is_never_fetched(
    db, receiver, llm, wuzapi, internal
):
    make_config(wuzapi.url, options={"vision": "always"})

    send(receiver, image_at(f"http://127.0.0.1:{internal.port}/internal"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert [r["body"]["Body"] for r in wuzapi.sent()] == [
        "Resposta: [image] Segue a foto do produto"]
    assert internal.connections == 0
    the_model_never_saw_the_secret(llm)
    [failed] = events_of("media.failed")
    assert failed.payload["permanent"] is True and failed.payload["will_retry"] is False
    assert "MEDIA_ALLOWED_HOSTS" in failed.payload["error"]
    assert str(internal.port) not in failed.payload["error"]


def test_the_url_in_a_media_message_is_never_passed_to_wuzapi_for_download(
    db, receiver, llm, wuzapi, internal
):
    make_config(wuzapi.url, options={"vision": "always"})
    picture = b"\xff\xd8\xff\xe0 the customer's real picture"
    body = image_at(f"http://127.0.0.1:{internal.port}/internal", direct_path=True)
    del body["s3"]
    wuzapi.media[body["event"]["Message"]["imageMessage"]["directPath"]] = (picture, "image/jpeg")

    send(receiver, body)

    wuzapi.wait_for(lambda r: len(r) >= 1)
    [download] = wuzapi.downloads
    assert download["path"] == "/chat/downloadimage"
    assert set(download["body"]) == {"DirectPath", "MediaKey", "Mimetype", "FileEncSHA256",
                                     "FileSHA256", "FileLength"}
    assert str(internal.port) not in json.dumps(download["body"])
    # The model got the media WuzAPI fetched from WhatsApp by its keys, nothing else.
    part = llm.chat_requests()[0]["body"]["messages"][-1]["content"][-1]
    assert part["image_url"]["url"] == f"data:image/jpeg;base64,{base64.b64encode(picture).decode()}"
    assert internal.connections == 0
    the_model_never_saw_the_secret(llm)


def test_an_allowed_name_that_resolves_to_loopback_is_refused_when_connecting(
    db, receiver, llm, wuzapi, internal
):
    make_config(wuzapi.url, options={"vision": "always"})

    # localhost:<port> is on the worker's list: the URL passes, the address does not.
    send(receiver, image_at(f"https://localhost:{internal.port}/internal.jpg"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    [failed] = events_of("media.failed")
    assert "private or local address" in failed.payload["error"]
    assert failed.payload["permanent"] is True
    assert internal.connections == 0
    the_model_never_saw_the_secret(llm)


def test_a_redirect_to_an_internal_address_is_not_followed(
    db, receiver, llm, wuzapi, internal, redirector
):
    make_config(wuzapi.url, options={"vision": "always"})
    before = redirector.connections

    send(receiver, image_at(f"http://127.0.0.1:{redirector.port}/bucket/image.jpg"))

    wuzapi.wait_for(lambda r: len(r) >= 1)
    assert redirector.connections == before + 1
    [failed] = events_of("media.failed")
    assert "answered 302" in failed.payload["error"] and failed.payload["permanent"] is True
    assert internal.connections == 0
    the_model_never_saw_the_secret(llm)


def test_a_media_server_that_drips_its_bytes_is_cut_off_at_the_deadline(
    db, receiver, llm, wuzapi, drip
):
    make_config(wuzapi.url, options={"vision": "always"})

    send(receiver, image_at(f"http://127.0.0.1:{drip.port}/bucket/slow.jpg"))

    # Two attempts (LLM_MAX_ATTEMPTS) of MEDIA_TIMEOUT_SECONDS each, then the image is given up.
    wuzapi.wait_for(lambda r: len(r) >= 1, timeout=30)
    assert [r["body"]["Body"] for r in wuzapi.sent()] == [
        "Resposta: [image] Segue a foto do produto"]
    failures = events_of("media.failed")
    assert [f.payload["will_retry"] for f in failures] == [True, False]
    assert all("timeout" in f.payload["error"] for f in failures)
    # A byte every 0.25 s would have kept each fetch alive for a minute; each was let go at
    # the deadline (plus the drip's next write noticing the hang-up).
    held = drip.wait_for_hang_ups(2, timeout=10)
    assert len(held) == 2
    assert all(MEDIA_TIMEOUT - 0.3 <= seconds < MEDIA_TIMEOUT + 1.5 for seconds in held), held
