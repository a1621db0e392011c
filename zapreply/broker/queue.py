"""The Celery app and the names of its tasks.

The receiver only publishes (by task name), so it builds the same app without importing the
worker's task modules, and with them litellm.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from zapreply.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

    from zapreply.broker.redis_fast_publish import RedisFastPublisher

# Task names: they are what Flower shows.
HANDLE_INBOUND = "inbound.handle_inbound"
RECORD_IGNORED = "inbound.record_ignored"
REPLY = "replies.reply"
SWEEP = "replies.sweep"
# What an operator wrote as the business (zapreply.actions.outreach), sent by a worker.
SEND_BUSINESS = "replies.send_business"
# A turn tried in the console's playground (zapreply.actions.playground), answered by a worker.
PLAYGROUND_TURN = "playground.answer_turn"

QUEUE = "zapreply"


def celery_config(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith("sqla+"):
        # The embedded broker hands its transport options to create_engine as they are.
        transport_options: dict[str, object] = {"connect_args": {"timeout": 30}}
    else:
        # Redis: an unacked message is handed out again after this long, even while its
        # first delivery still runs (harmless: a copy finds the message recorded or the
        # conversation leased). It bounds how long a dead worker's tasks stay away
        # (docs/RELIABILITY.md), so it is short, and countdowns stay below it.
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
            # Tasks carry no priority, so each queue is one list, which the worker's channel
            # fetches from atomically (zapreply.broker.redis_transport).
            "priority_steps": [0],
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
        # Redis: take a message only when a slot is free to run it. What waits stays in the
        # broker's list, where any worker takes it, never in the buffer of one that may die
        # (then it would wait out the visibility timeout). Celery ignores it elsewhere, with a
        # warning: RabbitMQ hands a dead consumer's messages back at once anyway.
        **({"worker_disable_prefetch": True} if _is_redis(settings.broker_url) else {}),
        # RabbitMQ: a worker whose host vanished (no FIN, no RST) is declared dead after two
        # missed heartbeats, and what it held goes back to the queue (Celery's default, 120 s,
        # would hold it four minutes).
        **({"broker_heartbeat": 10} if settings.broker_url.startswith(("amqp", "pyamqp"))
           else {}),
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


def make_celery(settings: Settings | None = None, task_cls: type | None = None) -> Celery:
    # Imported here: a receiver on the Redis fast path never needs Celery itself.
    from celery import Celery

    settings = settings or get_settings()
    if settings.broker_url.startswith("sqla+sqlite"):
        from zapreply.storage.db import private_sqlite_file

        # The embedded broker's file holds every queued message, customers' texts included.
        private_sqlite_file(settings.broker_url)
    app = Celery("zapreply", set_as_current=False,
                 **({"task_cls": task_cls} if task_cls is not None else {}))
    app.conf.update(celery_config(settings))
    return app


class Publisher:
    """Publishes tasks by name, for the receiver: through Celery's `send_task`, on a Celery app
    made on first use (the receiver never imports the worker's task modules).

    With a Redis broker and `PUBLISH_FAST_PATH=redis`, through
    zapreply.broker.redis_fast_publish instead: the same message, LPUSHed on one held
    connection, for a fraction of the receiver's CPU (see that module).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery: Celery | None = None
        self._celery_lock = threading.Lock()
        self._fast: RedisFastPublisher | None = None
        if settings.publish_fast_path == "redis" and _is_redis(settings.broker_url):
            from zapreply.broker.redis_fast_publish import RedisFastPublisher

            self._fast = RedisFastPublisher(settings.broker_url, QUEUE)
        else:
            # Made now, while one thread builds the app: the first import of `celery` is not
            # safe from several threads at once (a request racing another got "cannot import
            # name 'Celery'").
            self._celery = make_celery(settings)

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            with self._celery_lock:
                if self._celery is None:
                    self._celery = make_celery(self.settings)
        return self._celery

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a publish (or `ping`) raises when the broker cannot take the task, besides
        kombu's OperationalError and OSError."""
        if self._fast is not None:
            return self._fast.errors
        with self.celery.connection_for_write() as connection:  # lazy: nothing connects
            return tuple(connection.connection_errors) + tuple(connection.channel_errors)

    def ping(self) -> None:
        """Raise unless the broker answers (within 2 s, no retry)."""
        if self._fast is not None:
            self._fast.ping()
            return
        # No retry: a probe polls again by itself, and orchestrators time a probe out after
        # about a second (kombu's first retry alone would sleep two).
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=2)

    def queue_depth(self) -> int:
        """Tasks waiting in the queue (not those a worker holds), within about 2 s or raising:
        what a passive queue_declare counts (Redis: the length of the list kombu keeps it in)."""
        if self._fast is not None:
            return self._fast.queue_depth()
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
        """Publish a task (its id is the `as` target) and run the with-block; once the block
        has left, the broker has the task, or one of `errors` (or kombu's OperationalError, or
        OSError) was raised. On the fast path the block runs while Redis takes the task,
        overlapping the round trip (a gunicorn worker that sleeps mid-request costs several
        times the CPU of the wait itself; docs/PERFORMANCE.md, "Receiver").

        The block must not publish itself: the fast path's one connection is taken until the
        reply is read.
        """
        args = list(args or [])
        kwargs = kwargs or {}
        argsrepr = repr(tuple(args))
        if self._fast is not None:
            with self._fast.publishing(name, args, kwargs, argsrepr, kwargsrepr) as task_id:
                yield task_id
            return
        yield self.celery.send_task(name, args=args, kwargs=kwargs, argsrepr=argsrepr,
                                    kwargsrepr=kwargsrepr).id
