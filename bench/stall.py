"""Can slow or oversized clients stall the receiver? Two figures, on the receiver started with
the contract command (`gunicorn 'webhook_app:create_app()'`, gunicorn.conf.py from the repo
root) on the embedded defaults (SQLite, the kombu SQLite broker) in a temporary directory:

- how long a signed webhook takes to be answered (and queued) while N senders trickle their
  bodies a byte at a time, against the same webhook with nobody trickling;
- how long a body of a million empty form fields takes to be refused.

    .venv/bin/python -m bench.stall [--senders 6] [--rounds 20] [--gunicorn-args "..."]

`--gunicorn-args "--worker-class sync --threads 1"` shows what the same senders do to sync
workers.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.wire import stamped_now

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "wuzapi" / "message_text.json"
HMAC_KEY = "bench-stall-hmac-key-0123456789abcdef"
ADMIN_TOKEN = "bench-stall-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signature(body: bytes) -> str:
    return hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()


def webhook() -> bytes:
    envelope = json.loads(stamped_now(FIXTURE.read_bytes()))
    envelope["event"]["Info"]["ID"] = f"3A{uuid.uuid4().hex[:18].upper()}"
    return json.dumps(envelope).encode()


def trickle(port: int, stop: threading.Event, sending: threading.Event) -> None:
    """Headers of a signed webhook, then its body a byte every 0.1 s; again when cut off."""
    while not stop.is_set():
        body = webhook()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"POST /webhooks/wuzapi HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"x-hmac-signature: {signature(body)}\r\n\r\n".encode())
            sock.settimeout(0.1)
            for sent in range(len(body)):
                if stop.is_set():
                    return
                try:
                    sock.sendall(body[sent:sent + 1])
                    sending.set()
                    if sock.recv(65536) is not None:
                        break  # answered (408) or closed: connect again
                except TimeoutError:
                    continue
                except OSError:
                    break


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[float, int]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/webhooks/wuzapi", content=body, timeout=60,
                          headers={"Content-Type": content_type,
                                   "x-hmac-signature": signature(body)})
    return time.perf_counter() - started, response.status_code


def timings(url: str, rounds: int) -> list[float]:
    result = []
    for _ in range(rounds):
        seconds, status = post(url, webhook())
        if status != 200:
            raise SystemExit(f"webhook answered {status}")
        result.append(seconds)
    return result


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (f"median {statistics.median(ordered) * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms ({len(ordered)} webhooks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gunicorn-args", default="",
                        help="flags added to the contract command, over gunicorn.conf.py")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zapreply-stall-") as data_dir:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ZAPREPLY_DATA_DIR": data_dir, "WUZAPI_HMAC_KEY": HMAC_KEY,
               "ADMIN_TOKEN": ADMIN_TOKEN, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "GUNICORN_CMD_ARGS"):
            env.pop(name, None)
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        log = open(Path(data_dir) / "receiver.log", "wb")
        command = [sys.executable, "-m", "gunicorn", *shlex.split(args.gunicorn_args),
                   "webhook_app:create_app()"]
        receiver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if receiver.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((Path(data_dir) / "receiver.log").read_text()[-3000:])
                time.sleep(0.1)
            created = httpx.post(f"{url}/api/workflow-configs", timeout=10,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                 json={"name": "Stall", "instance": "loja-teste",
                                       "is_active": True, "model": "openai/stub",
                                       "system_prompt": "-",
                                       "send": {"driver": "wuzapi", "token": "t",
                                                "base_url": "http://127.0.0.1:9"}})
            if created.status_code not in (200, 201):
                raise SystemExit(f"creating the config: {created.status_code} {created.text}")

            timings(url, 3)  # the first requests warm each worker up
            quiet = timings(url, args.rounds)
            stop = threading.Event()
            sending = [threading.Event() for _ in range(args.senders)]
            threads = [threading.Thread(target=trickle, args=(port, stop, event), daemon=True)
                       for event in sending]
            for thread in threads:
                thread.start()
            for event in sending:
                event.wait(10)
            stalled = timings(url, args.rounds)
            stop.set()

            body = b"a=&" * 1_000_000
            refused = [post(url, body, "application/x-www-form-urlencoded") for _ in range(5)]
            healthz = httpx.get(f"{url}/healthz", timeout=5).status_code
        finally:
            receiver.terminate()
            receiver.wait(30)
            log.close()

    print(f"signed webhook, nobody trickling: {summary(quiet)}")
    print(f"signed webhook, {args.senders} senders trickling: {summary(stalled)}")
    statuses = sorted({status for _, status in refused})
    print(f"a million empty form fields ({len(body):,} bytes): answered {statuses} in "
          f"{summary([seconds for seconds, _ in refused]).replace('webhooks', 'posts')}; "
          f"/healthz afterwards {healthz}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
