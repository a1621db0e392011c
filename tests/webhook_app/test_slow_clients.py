"""The pieces that keep slow clients from holding the receiver: the body deadline, and the
gunicorn settings the contract command picks up."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.processes import ROOT
from webhook_app.deadline import Watcher
from zapreply import settings as settings_module


def test_a_read_blocked_past_its_deadline_ends_and_is_reported_cut() -> None:
    server, client = socket.socketpair()
    with server, client:
        client.sendall(b"part of a body")
        watcher = Watcher()
        watch = watcher.watch(server, 0.3)
        assert server.recv(100) == b"part of a body"
        # Blocks until the watcher shuts the read side: the client sends nothing more.
        assert server.recv(100) == b""
        assert watcher.release(watch) is True
        # The answer can still be written.
        server.sendall(b"HTTP/1.1 408")
        assert client.recv(100) == b"HTTP/1.1 408"


def test_a_read_released_before_its_deadline_is_left_alone() -> None:
    server, client = socket.socketpair()
    with server, client:
        watcher = Watcher()
        watch = watcher.watch(server, 0.2)
        client.sendall(b"whole body")
        assert server.recv(100) == b"whole body"
        assert watcher.release(watch) is False
        # A later read on the kept-alive connection still waits for the client.
        later = watcher.watch(server, 5)
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.recv(100)
        assert watcher.release(later) is False
        client.sendall(b"next request")
        assert server.recv(100) == b"next request"


def test_watched_reads_are_cut_in_deadline_order_whatever_order_they_started() -> None:
    watcher = Watcher()
    pairs = [socket.socketpair() for _ in range(2)]
    slow = watcher.watch(pairs[0][0], 5)
    fast = watcher.watch(pairs[1][0], 0.2)
    try:
        assert pairs[1][0].recv(10) == b""
        assert watcher.release(fast) is True
        assert slow.cut is False
    finally:
        assert watcher.release(slow) is False
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_the_bind_comes_from_gunicorn_bind_then_port_then_all_interfaces_on_8000(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    assert settings_module.load({}).receiver_bind == "0.0.0.0:8000"
    assert settings_module.load({"PORT": "9000"}).receiver_bind == "0.0.0.0:9000"
    assert settings_module.load({"PORT": "9000", "GUNICORN_BIND": "127.0.0.1:7000"}) \
        .receiver_bind == "127.0.0.1:7000"


@pytest.mark.parametrize("name, value", [
    ("WEBHOOK_READ_TIMEOUT_SECONDS", "0"), ("WEBHOOK_READ_TIMEOUT_SECONDS", "soon"),
    ("RECEIVER_THREADS", "0"), ("WEB_CONCURRENCY", "0"),
])
def test_a_receiver_setting_that_cannot_work_stops_the_process(name: str, value: str) -> None:
    with pytest.raises(settings_module.ImproperlyConfigured, match=name):
        settings_module.load({name: value})


def test_the_contract_command_runs_gthread_workers_with_the_configured_threads(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ZAPREPLY_DATA_DIR": str(tmp_path), "RECEIVER_THREADS": "5",
           "WEB_CONCURRENCY": "3", "PORT": "9123"}
    output = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--print-config", "webhook_app:create_app()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    config = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
              for line in output.splitlines() if "=" in line}
    assert config["worker_class"] == "webhook_app.server.ReceiverWorker"
    assert config["threads"] == "5"
    assert config["workers"] == "3"
    assert config["bind"] == "['0.0.0.0:9123']"
    assert int(config["limit_request_fields"]) <= 32


def test_a_read_is_not_cut_before_its_deadline() -> None:
    server, client = socket.socketpair()
    with server, client:
        watcher = Watcher()
        started = time.monotonic()
        watch = watcher.watch(server, 0.2)
        assert server.recv(10) == b""
        assert watcher.release(watch) is True
        assert time.monotonic() - started >= 0.2
