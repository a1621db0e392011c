"""The Celery app and the names of its tasks.

The receiver only publishes (by task name), so it builds the same app without importing the
worker's task modules, and with them litellm.
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
from typing import TYPE_CHECKING, Any

from zapreply.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# Task names: they are what Flower shows.
HANDLE_INBOUND = "inbound.handle_inbound"
RECORD_IGNORED = "inbound.record_ignored"
REPLY = "replies.reply"
SWEEP = "replies.sweep"

QUEUE = "zapreply"


def celery_config(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith("sqla+"):
        # The embedded broker hands its transport options to create_engine as they are.
        transport_options: dict[str, object] = {"connect_args": {"timeout": 30}}
    else:
        # Redis: an unacked message is handed out again after this long, even while its
        # first delivery still runs; task time limits stay well below it (settings check).
        transport_options = {
            "visibility_timeout": settings.visibility_timeout_seconds,
            # A server that accepts connections but never answers must not hang a webhook
            # (socket_timeout stays above the worker's 1 s BRPOP poll).
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            # How often kombu looks for unacked messages past the visibility timeout (by
            # default every 10 × 10 s): a task a killed worker held returns within one scan
            # after the timeout.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
        }
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport, but one redis-py client per channel
        # (zapreply.broker.redis_transport).
        **({"broker_transport": "zapreply.broker.redis_transport:Transport"}
           if _is_redis(settings.broker_url) else {}),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # At-least-once: ack after the task ran, and put it back if the process running it
        # dies (acks_late alone acks a task whose child was killed).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Without this, an acks_late task whose broker connection dropped may run twice
        # at once: once here, once redelivered elsewhere.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit_seconds,
        "task_soft_time_limit": max(settings.task_time_limit_seconds - 30, 1),
        # Each slot holds one message: a long LLM call must not sit on messages another
        # worker could be answering.
        "worker_prefetch_multiplier": 1,
        # After a broker reconnect Celery 5.7 lowers the prefetch count by the tasks still
        # running; with RabbitMQ a worker then held deliveries it never ran and took no more
        # (tests/faults, broker restart). Keep the full prefetch instead.
        "worker_enable_prefetch_count_reduction": False,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        # SIGTERM is a warm shutdown: running tasks finish, unstarted ones go back to the
        # broker. On a cold shutdown (SIGQUIT) these still give running replies 20 s first.
        "worker_soft_shutdown_timeout": 20.0,
        "worker_enable_soft_shutdown_on_idle": True,
        # Flower sees tasks only when workers send events. The "sent" event (tasks still in
        # the queue) is off: it is a second publish for every webhook, a quarter of the
        # receiver's CPU; Flower shows a task from the moment a worker receives it.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        # A publish against a broker that is down must fail fast, so the receiver can
        # answer 503 and WuzAPI retries later.
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    }


def _is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def make_celery(settings: Settings | None = None) -> Celery:
    # Imported here: a receiver on Redis never needs Celery itself (see Publisher).
    from celery import Celery

    settings = settings or get_settings()
    if settings.broker_url.startswith("sqla+sqlite"):
        from zapreply.storage.db import private_sqlite_file

        # The embedded broker's file holds every queued message, customers' texts included.
        private_sqlite_file(settings.broker_url)
    app = Celery("zapreply", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class Publisher:
    """Publishes tasks by name, for the receiver.

    With a Redis broker a task is the one LPUSH that Celery itself would make: the same
    protocol-2 message, on one long-lived connection. Going through `send_task` costs the
    receiver about as much CPU again as the rest of a webhook (kombu builds a new Redis client,
    a producer and its envelope for every publish; docs/PERFORMANCE.md), and the Celery app and
    kombu's transport ~8 MB of every receiver process. Other brokers (RabbitMQ, the embedded
    SQLite one) go through a Celery app, made on first use.

    The LPUSH goes straight through one redis-py `Connection` this publisher holds, not through
    `Redis.execute_command`: the client's pool, retry and observability layers cost more CPU
    than the round trip itself, on every webhook (docs/PERFORMANCE.md, "Receiver").
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery: Celery | None = None
        self._pool: Any = None
        self._connection: Any = None
        self._connection_pid = 0
        self._lock = threading.Lock()
        if _is_redis(settings.broker_url):
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # A broker that is down must fail the webhook fast (503, WuzAPI retries): no
            # retry and 2 s timeouts, as for send_task; and no CLIENT SETINFO round trip on
            # connecting, which a hung server would make wait too. No health-check PING either:
            # without a retry it could only fail the webhook the way the LPUSH itself would.
            # Nothing connects until the first publish (a gunicorn --preload master never holds
            # the worker's socket).
            self._pool = redis.ConnectionPool.from_url(
                settings.broker_url, socket_connect_timeout=2, socket_timeout=2,
                retry=Retry(NoBackoff(), 0), health_check_interval=0, driver_info=None,
            )
        self._origin = _json_string(f"gen{os.getpid()}@{socket.gethostname()}")

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.settings)
        return self._celery

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a publish (or `ping`) raises when the broker cannot take the task."""
        if self._pool is None:
            return ()
        import redis

        return (redis.RedisError,)

    def ping(self) -> None:
        """Raise unless the broker answers (within 2 s, no retry)."""
        if self._pool is not None:
            self._command("PING")
            return
        # No retry: a probe polls again by itself, and orchestrators time a probe out after
        # about a second (kombu's first retry alone would sleep two).
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=2)

    def queue_depth(self) -> int:
        """Tasks waiting in the queue (not those a worker holds), within about 2 s or raising:
        Redis's LLEN of the list kombu keeps it in; elsewhere what a passive queue_declare
        counts (RabbitMQ, the embedded SQLite broker)."""
        if self._pool is not None:
            return int(self._command("LLEN", QUEUE))
        with self.celery.connection_for_read() as connection:
            connection.ensure_connection(max_retries=0, timeout=2)
            try:
                _, count, _ = connection.default_channel.queue_declare(queue=QUEUE, passive=True)
            except connection.channel_errors:
                return 0  # never declared: no worker has started, nothing was published
            return int(count)

    def send(self, name: str, kwargs: dict[str, Any] | None = None, kwargsrepr: str = "{}",
             args: list[Any] | None = None) -> str:
        """Publish a task and return its id once the broker has it."""
        with self.publishing(name, kwargs, kwargsrepr, args) as task_id:
            pass
        return task_id

    @contextmanager
    def publishing(self, name: str, kwargs: dict[str, Any] | None = None,
                   kwargsrepr: str = "{}", args: list[Any] | None = None) -> Iterator[str]:
        """Publish a task (its id is the `as` target); the with-block runs while Redis takes
        it, and leaving the block waits for Redis's answer, raising one of `errors` if the task
        was not taken. What the block does overlaps the round trip: a receiver that only then
        waits often finds the answer there instead of sleeping on the socket, and a gunicorn
        worker that sleeps mid-request costs several times the CPU of the wait itself
        (docs/PERFORMANCE.md, "Receiver").

        If the block raises, the connection is dropped unread (the task may or may not have been
        taken) and the exception goes on. The block must not publish itself: the publisher's one
        connection is taken until the reply is read.
        """
        args = list(args or [])
        kwargs = kwargs or {}
        argsrepr = repr(tuple(args))
        if self._pool is None:
            yield self.celery.send_task(name, args=args, kwargs=kwargs, argsrepr=argsrepr,
                                        kwargsrepr=kwargsrepr).id
            return
        task_id, delivery_tag = str(uuid.uuid4()), str(uuid.uuid4())
        body = base64.b64encode(json.dumps([args, kwargs, _NO_CALLBACKS]).encode())
        message = _message(body.decode("ascii"), _json_string(name), task_id,
                           _json_string(argsrepr), _json_string(kwargsrepr), self._origin,
                           delivery_tag).encode()
        with self._lock:
            connection = self._held_connection()
            try:
                # kombu's Redis transport keeps priority 0 in the list named after the queue.
                connection.send_packed_command(connection.pack_command("LPUSH", QUEUE, message),
                                               check_health=False)
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
        """The publisher's one connection (under its lock); it connects on first use and again
        after a failure dropped it, or after the server closed it (a Redis restart) — checked
        the way redis-py's pool checks a connection it hands out: nothing may be readable on a
        connection that expects no reply (a poll, no round trip)."""
        if self._connection is None or self._connection_pid != os.getpid():
            # A forked child never shares its parent's socket.
            self._connection = self._pool.make_connection()
            self._connection_pid = os.getpid()
        connection = self._connection
        connection.connect()  # a no-op when connected
        try:
            stale = connection.can_read()
        except (OSError, self.errors[0]):
            stale = True
        if stale:
            connection.disconnect()
            connection.connect()
        return connection


_NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _message(body: str, task: str, task_id: str, argsrepr: str, kwargsrepr: str, origin: str,
             delivery_tag: str) -> str:
    """A Celery protocol-2 message as kombu's Redis transport stores it, the body base64-encoded.
    `task`, `argsrepr`, `kwargsrepr` and `origin` come as JSON string literals. Built as text
    instead of json.dumps of a dict of ~30 keys (a sixth of the cost); tests/zapreply/
    test_queue.py checks it against the message Celery's send_task makes."""
    return (
        f'{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", '
        f'"headers": {{"lang": "py", "task": {task}, "id": "{task_id}", "shadow": null, '
        f'"eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, '
        f'"timelimit": [null, null], "root_id": "{task_id}", "parent_id": null, '
        f'"argsrepr": {argsrepr}, "kwargsrepr": {kwargsrepr}, "origin": {origin}, '
        f'"ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, '
        f'"stamps": {{}}}}, "properties": {{"correlation_id": "{task_id}", "delivery_mode": 2, '
        f'"delivery_info": {{"exchange": "", "routing_key": "{QUEUE}"}}, "priority": 0, '
        f'"body_encoding": "base64", "delivery_tag": "{delivery_tag}"}}}}'
    )


# A str as a JSON string literal, quotes included (what json.dumps does with one).
_json_string = encode_basestring_ascii
