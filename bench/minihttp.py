"""A small asyncio HTTP/1.1 server and client, standard library only.

The stand-ins must hold hundreds of slow requests open at once for almost nothing (one
coroutine per connection, no thread), and the load generator must spend as little CPU per
request as possible, since it shares the machine's two cores with what it measures. Only what
those two need is here: Content-Length bodies, keep-alive, no chunked encoding, no TLS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_MAX_HEADER_BYTES = 64 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required",
            500: "Internal Server Error"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    payload: Any = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        body = json.dumps(self.payload).encode()
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        return head.encode("latin-1") + body


Handler = Callable[[Request], Awaitable[Response]]


def split_head(head: bytes) -> tuple[list[str], dict[str, str]]:
    """The start line's words and the headers (names lower-cased) of a message head."""
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 2), headers


async def _serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            (method, path, *_version), headers = split_head(head)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(Response(411, {"error": "chunked bodies unsupported"}).encode(False))
                return
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            keep_alive = headers.get("connection", "").lower() != "close"
            response = await handler(Request(method, path, headers, body))
            writer.write(response.encode(keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and answer every request with `handler`."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port, backlog=4096,
                                      limit=_MAX_HEADER_BYTES)


async def post_once(host: str, port: int, path: str, body: bytes, content_type: str,
                    timeout: float) -> int:
    """One POST on a fresh connection (gunicorn's sync workers close after each answer);
    return the status code. Raises OSError or asyncio.TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            (_version, status, *_reason), headers = split_head(
                await reader.readuntil(b"\r\n\r\n")
            )
            await reader.readexactly(int(headers.get("content-length") or 0))
            return int(status)
        finally:
            writer.close()
