"""The receiver's Redis fast path: a task published as the one LPUSH Celery itself would make.

Chosen by `PUBLISH_FAST_PATH=redis` with a Redis broker (zapreply.broker.queue.Publisher); with
`off`, or any other broker, the receiver publishes through Celery's `send_task`. It exists for
the receiver's CPU: `send_task` builds a new Redis client, a producer and an envelope for every
publish, about as much CPU again as the rest of a webhook (docs/PERFORMANCE.md, "Receiver"),
and the Celery app and kombu's transport weigh ~8 MB in every receiver process.

What it writes is Celery's protocol-2 message as kombu's Redis transport stores it, built as
text; tests/zapreply/broker/test_queue.py compares it with what the installed Celery's
`send_task` writes, so an upgrade that changes the message fails there, not in production.
The LPUSH goes through one redis-py `Connection` held here, not `Redis.execute_command`: the
client's pool, retry and observability layers cost more CPU than the round trip itself.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisFastPublisher:
    """Publishes to kombu's Redis list for `queue` on one long-lived connection."""

    errors: tuple[type[BaseException], ...] = (redis.RedisError,)

    def __init__(self, broker_url: str, queue: str) -> None:
        self.queue = queue
        # A broker that is down must fail the webhook fast (503, WuzAPI retries): no retry and
        # 2 s timeouts, as for send_task; and no CLIENT SETINFO round trip on connecting, which
        # a hung server would make wait too. No health-check PING either: without a retry it
        # could only fail the webhook the way the LPUSH itself would. Nothing connects until
        # the first publish (a gunicorn --preload master never holds the worker's socket).
        self._pool = redis.ConnectionPool.from_url(
            broker_url, socket_connect_timeout=2, socket_timeout=2,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, driver_info=None,
        )
        self._connection: Any = None
        self._connection_pid = 0
        self._lock = threading.Lock()
        self._origin = _json_string(f"gen{os.getpid()}@{socket.gethostname()}")

    def ping(self) -> None:
        self._command("PING")

    def queue_depth(self) -> int:
        return int(self._command("LLEN", self.queue))

    @contextmanager
    def publishing(self, name: str, args: list[Any], kwargs: dict[str, Any], argsrepr: str,
                   kwargsrepr: str) -> Iterator[str]:
        """See zapreply.broker.queue.Publisher.publishing: the block overlaps Redis's round
        trip, and leaving it reads the answer."""
        task_id, delivery_tag = str(uuid.uuid4()), str(uuid.uuid4())
        body = base64.b64encode(json.dumps([args, kwargs, _NO_CALLBACKS]).encode())
        message = _message(body.decode("ascii"), _json_string(name), task_id,
                           _json_string(argsrepr), _json_string(kwargsrepr), self._origin,
                           delivery_tag, self.queue).encode()
        with self._lock:
            connection = self._held_connection()
            try:
                # kombu's Redis transport keeps priority 0 in the list named after the queue.
                connection.send_packed_command(
                    connection.pack_command("LPUSH", self.queue, message), check_health=False)
                yield task_id
                connection.read_response()
            except BaseException:
                # Never leave a reply unread (a timeout, an interrupted read, a failed block):
                # the next command would take it for its own.
                connection.disconnect()
                raise

    def _command(self, *command: str) -> Any:
        with self._lock:
            connection = self._held_connection()
            try:
                connection.send_command(*command)
                return connection.read_response()
            except BaseException:
                connection.disconnect()
                raise

    def _held_connection(self) -> Any:
        """The one connection (under the lock); it connects on first use and again after a
        failure dropped it, or after the server closed it (a Redis restart) — checked the way
        redis-py's pool checks a connection it hands out: nothing may be readable on a
        connection that expects no reply (a poll, no round trip)."""
        if self._connection is None or self._connection_pid != os.getpid():
            # A forked child never shares its parent's socket.
            self._connection = self._pool.make_connection()
            self._connection_pid = os.getpid()
        connection = self._connection
        connection.connect()  # a no-op when connected
        try:
            stale = connection.can_read()
        except (OSError, redis.RedisError):
            stale = True
        if stale:
            connection.disconnect()
            connection.connect()
        return connection


_NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _message(body: str, task: str, task_id: str, argsrepr: str, kwargsrepr: str, origin: str,
             delivery_tag: str, queue: str) -> str:
    """A Celery protocol-2 message as kombu's Redis transport stores it, the body base64-encoded.
    `task`, `argsrepr`, `kwargsrepr` and `origin` come as JSON string literals. Built as text
    instead of json.dumps of a dict of ~30 keys (a sixth of the cost)."""
    return (
        f'{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", '
        f'"headers": {{"lang": "py", "task": {task}, "id": "{task_id}", "shadow": null, '
        f'"eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, '
        f'"timelimit": [null, null], "root_id": "{task_id}", "parent_id": null, '
        f'"argsrepr": {argsrepr}, "kwargsrepr": {kwargsrepr}, "origin": {origin}, '
        f'"ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, '
        f'"stamps": {{}}}}, "properties": {{"correlation_id": "{task_id}", "delivery_mode": 2, '
        f'"delivery_info": {{"exchange": "", "routing_key": "{queue}"}}, "priority": 0, '
        f'"body_encoding": "base64", "delivery_tag": "{delivery_tag}"}}}}'
    )


# A str as a JSON string literal, quotes included (what json.dumps does with one).
_json_string = encode_basestring_ascii
