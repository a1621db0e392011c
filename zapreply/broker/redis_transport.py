"""kombu's Redis transport, with one redis-py client per channel for its commands.

kombu's Redis channel builds a new `redis.Redis` for every command it sends outside a batch:
each flush of the task events Flower reads, each unacked-message bookkeeping and each ack
(`Channel.conn_or_acquire`). A client is only a handle on the channel's connection pool, but
building one costs about as much CPU as the command it sends (~80 µs; ~0.5 ms of a worker's
CPU per message, docs/PERFORMANCE.md). Here the channel builds one and keeps it, for as long as
the pool it was made for: redis-py's client is thread-safe, every command and pipeline takes
its own connection from the pool, so nothing about the commands changes.

Used by the worker's Celery app when the broker is Redis (`broker_transport`,
zapreply.broker.queue.celery_config, which names it as a string so that the receiver, which
builds the same config, never imports kombu).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _command_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        kept = self._command_client
        # kombu drops its pools after a connection error; a client of a dropped pool goes too.
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._command_client = self._create_client()
        yield kept


class Transport(redis.Transport):
    Channel = Channel
