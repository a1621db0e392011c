"""The load generator, run as its own process so its CPU is not the measured processes' CPU.

    python -m bench.loadgen --url http://127.0.0.1:8000/webhooks/wuzapi --fixture F \
        --first 0 --duration 10 (--connections 16 | --rate 50)

Each request is the WuzAPI fixture with its own WhatsApp message id and its own chat (so the
receiver's and the worker's deduplication never drop one, and no two messages share a
conversation): request `n` has id `3A` + n in 18 hex digits and phone 55119 + n in 8 digits.

- `--connections C`: closed loop, C requests in flight at all times (the maximum rate).
- `--rate R`: open loop, a request every 1/R s whatever the answers (latency at a given rate).

Prints one JSON object: start and end (time.monotonic()), the CPU this process used, and for
every request [n, start, seconds, status] (status 0: connection error or timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.minihttp import post_once, split_head
from tests.wire import stamped_now

FIXTURE_ID = b"3A00000000000000F001"
FIXTURE_PHONE = b"5511900000001"
_TIMEOUT = 10.0


def message_id(n: int) -> str:
    return f"3A{n:018X}"


def phone(n: int) -> str:
    return f"55119{n:08d}"


def chat_jid(n: int) -> str:
    return f"{phone(n)}@s.whatsapp.net"


class Bodies:
    """The fixture with the message id and the phone replaced per request."""

    def __init__(self, fixture: Path) -> None:
        raw = fixture.read_bytes()
        if FIXTURE_ID not in raw or FIXTURE_PHONE not in raw:
            raise SystemExit(f"{fixture}: not the message_text fixture (id or phone missing)")
        self._raw = raw
        self._stamp()

    def _stamp(self) -> None:
        # Timestamped now, as WuzAPI would (an old one is a backlog, not answered); again each
        # minute, so a long run never posts a stale message.
        self._template = stamped_now(self._raw)
        self._stamped = time.monotonic()

    def body(self, n: int) -> bytes:
        if time.monotonic() - self._stamped > 60:
            self._stamp()
        return self._template.replace(FIXTURE_ID, message_id(n).encode()).replace(
            FIXTURE_PHONE, phone(n).encode()
        )


@dataclass
class Target:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/")


@dataclass
class Recorder:
    bodies: Bodies
    target: Target
    results: list[tuple[int, float, float, int]] = field(default_factory=list)

    async def send(self, n: int) -> None:
        body = self.bodies.body(n)
        started = time.monotonic()
        try:
            status = await post_once(self.target.host, self.target.port, self.target.path,
                                     body, "application/json", _TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            status = 0
        self.results.append((n, started, time.monotonic() - started, status))


async def closed_loop(recorder: Recorder, first: int, connections: int, duration: float) -> None:
    numbers = itertools.count(first)
    deadline = time.monotonic() + duration

    async def user() -> None:
        while time.monotonic() < deadline:
            await recorder.send(next(numbers))

    await asyncio.gather(*(user() for _ in range(connections)))


@dataclass
class _Open:
    """One open-loop request in progress on its own non-blocking socket."""

    n: int
    started: float
    sock: socket.socket
    out: bytes
    sent: int = 0
    got: bytearray = field(default_factory=bytearray)


def open_loop(recorder: Recorder, first: int, rate: float, duration: float,
              max_in_flight: int) -> int:
    """Send at `rate`, each request on a new connection; return how many sends were skipped
    because too many were open.

    Plain non-blocking sockets under one `selectors` loop, not asyncio: this client shares the
    cores with what it measures, and asyncio's streams and tasks cost ~0.5 ms of CPU a request,
    enough at ~1,000 requests a second to delay the receiver it times (a request here costs a
    fraction of that). A request's time runs from just before its connect to its last byte."""
    target = recorder.target
    address = (target.host, target.port)
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n"
            "Connection: close\r\n\r\n")
    selector = selectors.DefaultSelector()
    total = int(rate * duration)
    start = time.monotonic()
    next_sweep = start + 0.1
    in_flight: dict[int, _Open] = {}
    skipped = k = 0

    def done(fd: int, status: int) -> None:
        request = in_flight.pop(fd)
        selector.unregister(request.sock)
        request.sock.close()
        recorder.results.append((request.n, request.started,
                                 time.monotonic() - request.started, status))

    while k < total or in_flight:
        now = time.monotonic()
        while k < total and start + k / rate <= now:
            if len(in_flight) >= max_in_flight:
                skipped += 1
            else:
                body = recorder.bodies.body(first + k)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                started = time.monotonic()
                sock.connect_ex(address)
                request = _Open(first + k, started, sock, head.format(len(body)).encode() + body)
                in_flight[sock.fileno()] = request
                selector.register(sock, selectors.EVENT_WRITE, sock.fileno())
            k += 1
        wait = max(0.0, start + k / rate - time.monotonic()) if k < total else 0.05
        for key, _events in selector.select(min(wait, 0.05)):
            fd = key.data
            request = in_flight[fd]
            try:
                if request.sent < len(request.out):
                    request.sent += request.sock.send(request.out[request.sent:])
                    if request.sent == len(request.out):
                        selector.modify(request.sock, selectors.EVENT_READ, fd)
                    continue
                chunk = request.sock.recv(65536)
            except OSError:
                done(fd, 0)
                continue
            request.got += chunk
            status = _complete(request.got)
            if status is not None:
                done(fd, status)
            elif not chunk:
                done(fd, 0)  # closed before a whole answer
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 0.1
            for fd in [fd for fd, r in in_flight.items() if now - r.started > _TIMEOUT]:
                done(fd, 0)
    selector.close()
    return skipped


def _complete(got: bytearray) -> int | None:
    """The status of a whole HTTP answer in `got`, or None while more is to come."""
    end = got.find(b"\r\n\r\n")
    if end < 0:
        return None
    (_version, status, *_reason), headers = split_head(bytes(got[:end]))
    if len(got) - end - 4 < int(headers.get("content-length") or 0):
        return None
    return int(status)


@dataclass
class LoadResult:
    """What one load generator run printed, read back by the harness."""

    start: float
    end: float
    cpu_seconds: float
    skipped: int
    requests: list[tuple[int, float, float, int]]

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        data = json.loads(text)
        return cls(data["start"], data["end"], data["cpu_seconds"], data["skipped"],
                   [tuple(r) for r in data["requests"]])  # type: ignore[misc]

    @property
    def ok(self) -> list[tuple[int, float, float, int]]:
        return [r for r in self.requests if r[3] == 200]

    @property
    def failed(self) -> int:
        return len(self.requests) - len(self.ok) + self.skipped

    def failures(self) -> str:
        """e.g. "3 × 503, 2 × no answer" ("no answer": connection error or timeout)."""
        counts = Counter(r[3] for r in self.requests if r[3] != 200)
        parts = [f"{n} × {status or 'no answer'}" for status, n in sorted(counts.items())]
        if self.skipped:
            parts.append(f"{self.skipped} not sent (too many open)")
        return ", ".join(parts) or "none"

    @property
    def rate(self) -> float:
        """Requests answered 200 per second of the run."""
        return len(self.ok) / max(self.end - self.start, 1e-9)

    @property
    def latencies(self) -> list[float]:
        return [r[2] for r in self.ok]

    def started(self) -> dict[int, float]:
        """Start time of each request answered 200, by request number."""
        return {r[0]: r[1] for r in self.ok}

    @property
    def last_number(self) -> int:
        return max((r[0] for r in self.requests), default=-1)


def _cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


def run(args: argparse.Namespace) -> dict[str, object]:
    recorder = Recorder(Bodies(Path(args.fixture)), Target.parse(args.url))
    cpu_before = _cpu_seconds()
    started = time.monotonic()
    skipped = 0
    if args.rate:
        skipped = open_loop(recorder, args.first, args.rate, args.duration, args.max_in_flight)
    else:
        asyncio.run(closed_loop(recorder, args.first, args.connections, args.duration))
    return {
        "start": started,
        "end": time.monotonic(),
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "skipped": skipped,
        "requests": recorder.results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="webhook load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first request")
    parser.add_argument("--duration", type=float, required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--connections", type=int, help="closed loop with this many in flight")
    mode.add_argument("--rate", type=float, help="open loop at this many requests per second")
    parser.add_argument("--max-in-flight", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
