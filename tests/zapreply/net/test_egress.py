"""The guarded transport (zapreply.net.egress) against real sockets on loopback: which addresses are
refused, that the address checked is the one connected to, that redirects are not followed and
that a deadline ends a call however slowly the server answers."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from zapreply.net import egress

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)


class Server:
    """A TCP server on loopback that counts connections and answers each with `answer`
    (bytes, or a callable writing to the socket)."""

    def __init__(self, answer) -> None:  # type: ignore[no-untyped-def]
        self.answer = answer
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                if callable(self.answer):
                    self.answer(conn)
                else:
                    conn.sendall(self.answer)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server(OK)
    yield running
    running.close()


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    """A stand-in for DNS: every name resolves to `addresses`."""
    def resolve(host, port, type=0):  # type: ignore[no-untyped-def]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    return resolve


def client(private_allowed, resolve=socket.getaddrinfo) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(
        transport=egress.Transport(egress.Backend(private_allowed, resolve=resolve), LIMITS),
        follow_redirects=False, trust_env=False)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.8", "172.16.5.4", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1",
    "2002:7f00:1::1", "::127.0.0.1",
])
def test_addresses_that_are_not_the_public_internet_are_forbidden(address: str) -> None:
    assert egress.forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "157.240.1.60", "2606:4700:4700::1111", "::ffff:8.8.8.8",
    "64:ff9b::808:808",
])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not egress.forbidden(ipaddress.ip_address(address))


def test_a_loopback_address_is_refused_before_any_connection(server: Server) -> None:
    with client(lambda host, port: False) as http, pytest.raises(egress.AddressRefused):
        http.get(f"http://127.0.0.1:{server.port}/internal")
    assert server.connections == 0


def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(server: Server) -> None:
    with client(lambda host, port: False, resolving_to("127.0.0.1", "::1")) as http, \
            pytest.raises(egress.AddressRefused):
        http.get(f"http://media.example:{server.port}/internal")
    assert server.connections == 0


def test_the_address_checked_is_the_address_connected_to(server: Server) -> None:
    # No DNS knows media.example: the connection can only have gone to the address the
    # backend resolved and checked, never to a second lookup's answer.
    allowed = {("media.example", server.port)}
    with client(lambda host, port: (host, port) in allowed,
                resolving_to("127.0.0.1")) as http:
        assert http.get(f"http://media.example:{server.port}/x").text == "hello"
    assert server.connections == 1


def test_an_origin_allowed_to_be_private_is_reached_and_no_other(server: Server) -> None:
    with client(lambda host, port: (host, port) == ("127.0.0.1", server.port)) as http:
        assert http.get(f"http://127.0.0.1:{server.port}/").status_code == 200
        with pytest.raises(egress.AddressRefused):
            http.get(f"http://localhost:{server.port}/")
    assert server.connections == 1


def test_a_redirect_is_answered_not_followed() -> None:
    target = Server(OK)
    redirect = Server(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/internal"
                      "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    try:
        with egress.client(lambda host, port: True, LIMITS) as http:
            response = http.get(f"http://127.0.0.1:{redirect.port}/image.jpg")
    finally:
        target.close()
        redirect.close()
    assert response.status_code == 302
    assert target.connections == 0


def test_a_deadline_ends_a_call_whose_server_drips_its_body() -> None:
    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            conn.sendall(b"x")
            time.sleep(0.2)

    slow = Server(drip)
    started = time.monotonic()
    try:
        with egress.client(lambda host, port: True, LIMITS) as http, \
                pytest.raises(httpx.ReadTimeout), egress.deadline(time.monotonic() + 1.0):
            # httpx's own timeout alone would never fire: a byte arrives every 0.2 s.
            with http.stream("GET", f"http://127.0.0.1:{slow.port}/", timeout=5) as response:
                for _ in response.iter_bytes():
                    pass
    finally:
        slow.close()
    assert 0.9 <= time.monotonic() - started < 1.6


def test_a_call_made_after_its_deadline_does_not_connect(server: Server) -> None:
    with egress.client(lambda host, port: True, LIMITS) as http, \
            pytest.raises(httpx.ConnectTimeout), egress.deadline(time.monotonic() - 1):
        http.get(f"http://127.0.0.1:{server.port}/")
    assert server.connections == 0


def test_nested_deadlines_keep_the_earlier() -> None:
    soon = time.monotonic() + 1
    with egress.deadline(soon), egress.deadline(soon + 60):
        assert egress._deadline.get() == soon
    assert egress._deadline.get() is None
