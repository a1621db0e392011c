"""Driving the running system as WuzAPI does: a gunicorn receiver process, posts of fixture
bodies over HTTP, and waits on what lands in the tables. Shared by the end-to-end modules
(which also need the `worker_process` fixture)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import fixture_json, signed, wait_until_idle
from tests.processes import Receiver, free_port
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event


@pytest.fixture
def idle_afterwards(db):  # type: ignore[no-untyped-def]
    """The next test empties the tables: let this test's tasks finish first."""
    yield
    wait_until_idle()


@pytest.fixture(scope="module")
def receiver(migrated: str, base_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    """gunicorn 'webhook_app:create_app()', as deployed."""
    process = Receiver({**os.environ, **base_env}, free_port(),
                       tmp_path_factory.mktemp("receiver") / "receiver.log")
    yield process.url
    process.stop()


def fixture_body(name: str, **info_overrides) -> bytes:  # type: ignore[no-untyped-def]
    envelope = fixture_json(name)
    envelope["event"]["Info"].update(info_overrides)
    return json.dumps(envelope).encode()


def fresh(body: bytes) -> bytes:
    """The fixture with a message id no earlier test used (the receiver remembers ids)."""
    return body.replace(b"3A00000000000000F001", f"3A{uuid.uuid4().hex[:18].upper()}".encode())


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/wuzapi", content=body,
                      headers={"Content-Type": "application/json", **signed(body)}, timeout=10)


def events_of(type_: str) -> list[Event]:
    with session_scope() as session:
        return list(session.scalars(select(Event).where(Event.type == type_).order_by(Event.id)))


def all_events() -> list[Event]:
    with session_scope() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events: {[(e.type, e.payload) for e in all_events()]}")
        time.sleep(0.05)


def wait_for_event(type_: str, timeout: float = 20.0) -> None:
    wait_for(lambda: bool(events_of(type_)), timeout)
