"""Starting zapreply's own processes for tests, as they are deployed, and waiting for them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, *, timeout: float,
                         log: Callable[[], str]) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            raise AssertionError(f"{url} did not answer:\n{log()[-3000:]}")
        time.sleep(0.1)


class Gunicorn:
    """`gunicorn <app>` from the repository's directory (so gunicorn.conf.py applies), as
    deployed; ready once `ready_path` answers."""

    def __init__(self, app: str, ready_path: str, env: dict[str, str], port: int,
                 log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                 app],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until_answering(f"{self.url}{ready_path}", self.process, timeout=30,
                             log=lambda: log_path.read_text(errors="replace"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class Receiver(Gunicorn):
    """gunicorn 'webhook_app:create_app()', as deployed."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        super().__init__("webhook_app:create_app()", "/healthz", env, port, log_path)
