"""HTTP to places a customer's message can steer: media URLs from webhooks and the business's
tools (whose arguments come from the model). Two guards, both where the socket is made:

- the address: the host is resolved when the connection is opened and only addresses that are
  public are connected to (not loopback, private, link-local, multicast, reserved or
  unspecified; IPv4 and IPv6, including IPv4 addresses carried inside IPv6). Checking the name
  earlier and letting the socket resolve it again would let DNS answer differently the second
  time (rebinding); here the address checked is the address connected to. An origin the
  operator named explicitly may be private (`private_allowed`).
- the clock: inside `deadline(at)`, connecting, the TLS handshake and every read and write get
  at most the time left, so a server that drips a byte now and then cannot keep a call alive
  past its deadline (httpx's own timeouts bound each read, not the whole call).

httpx's HTTPTransport keeps its request and error mapping; only its connection pool is
replaced by one whose network backend is `Backend`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from zapreply.net.http import ssl_context

# host, port → whether that origin may resolve to a private address.
PrivateAllowed = Callable[[str, int], bool]

_deadline: ContextVar[float | None] = ContextVar("zapreply_egress_deadline", default=None)

# RFC 6052's NAT64 prefix: a gateway turns 64:ff9b::a.b.c.d into a connection to a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(httpx.ConnectError):
    """The host resolved only to addresses that are not public, and its origin is not one the
    operator allowed. Raised before any connection is made; a retry cannot help."""


def forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a connection to `address` could reach something that is not the public
    internet (this host, its network, the cloud's metadata service, ...)."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 reaches that IPv4 address: judged as such.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden(embedded)
    return (
        not address.is_global or address.is_loopback or address.is_private
        or address.is_link_local or address.is_multicast or address.is_reserved
        or address.is_unspecified
    )


def _remaining(timeout: float | None, expired: type[Exception]) -> float | None:
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the deadline passed")
    return left if timeout is None else min(timeout, left)


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Calls made inside end by `at` (time.monotonic()); nested deadlines keep the earlier."""
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def timeout_until(at: float) -> httpx.Timeout:
    """httpx timeouts for a call that must end by `at`: every phase gets the time left."""
    return httpx.Timeout(max(at - time.monotonic(), 0.001))


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(
            ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class Backend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, resolving and checking the address itself when
    `private_allowed` is given (None: an endpoint the operator configured, not checked), and
    holding every socket operation to the current `deadline`."""

    def __init__(self, private_allowed: PrivateAllowed | None,
                 resolve: Callable[..., list[Any]] = socket.getaddrinfo) -> None:
        self._inner = httpcore.SyncBackend()
        self._private_allowed = private_allowed
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = [host] if self._private_allowed is None else self._addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address, port, _remaining(timeout, httpcore.ConnectTimeout),
                    local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _Stream(stream)
        assert failure is not None
        raise failure

    def _addresses(self, host: str, port: int) -> list[str]:
        try:
            found = self._resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the host: {exc}") from None
        unique = list(dict.fromkeys(info[4][0] for info in found))
        assert self._private_allowed is not None
        if self._private_allowed(host.rstrip(".").lower(), port):
            return unique
        public = [a for a in unique if not forbidden(ipaddress.ip_address(a.split("%", 1)[0]))]
        if not public:
            raise AddressRefused("the host resolves only to loopback, private, link-local or "
                                 "otherwise non-public addresses")
        return public

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used here")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Transport(httpx.HTTPTransport):
    """httpx's transport over a pool whose connections are made by `backend`."""

    def __init__(self, backend: httpcore.NetworkBackend, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context(), limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=backend,
        )


def client(private_allowed: PrivateAllowed | None, limits: httpx.Limits) -> httpx.Client:
    """A client that never follows redirects (each hop would need the same checks; callers
    treat a 3xx as a failure) and ignores proxy settings from the environment (a proxy would
    make the address checked the proxy's, not the destination's)."""
    return httpx.Client(transport=Transport(Backend(private_allowed), limits),
                        follow_redirects=False, trust_env=False)
