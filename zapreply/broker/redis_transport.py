"""kombu's Redis transport, with a fetch that never holds a message only in a worker's memory.

Two changes to kombu's Redis channel, both used by the worker's Celery app when the broker is
Redis (`broker_transport`, zapreply.broker.queue.celery_config, which names this module as a
string so that the receiver, which builds the same config, never imports kombu):

**Atomic fetch.** kombu takes a message with BRPOP and only then, in a second command, records
it in its `unacked` hash, from which it is handed out again if the worker dies. Between the two
the message exists only in the worker: in the socket's buffer (kombu even leaves a BRPOP reply
unread there while the worker has no free thread) or in its memory. A worker killed then loses
it for good, with WuzAPI already told "queued" (tests/faults caught this under load). Here the
channel takes a message with BLMOVE into a list of its own, `zapreply.inflight.<id>`, in the
same server-side step that removes it from the queue, and one Lua script then moves it from that
list into the unacked records. A message is therefore always in the queue, in a channel's
inflight list, or in the unacked records, and each of those is handed back by someone:

- the unacked records by kombu, after the visibility timeout;
- an inflight list by whichever worker next notices that its owner stopped renewing
  `zapreply.inflight.<id>.alive` (every HEARTBEAT_SECONDS, expiring after ALIVE_SECONDS), or by
  its own channel when it closes. If an owner was only slow and its message was handed back
  meanwhile, the claim script finds the list empty and the owner drops its copy, so a message is
  never delivered twice by this.

BLMOVE takes one source list, so the atomic fetch is used when a channel consumes exactly one
list (one queue, `priority_steps` [0], no global key prefix: zapreply's configuration); any
other shape falls back to kombu's BRPOP. It needs Redis 6.2 or later.

**One redis-py client per channel.** kombu builds a new `redis.Redis` for every command it sends
outside a batch (`Channel.conn_or_acquire`): each flush of the task events Flower reads, each
unacked bookkeeping and each ack. Building one costs about as much CPU as the command it sends
(~80 µs; ~0.5 ms of a worker's CPU per message, docs/PERFORMANCE.md). Here the channel keeps
one for as long as the pool it was made for; redis-py's client is thread-safe and every command
takes its own connection from the pool, so nothing about the commands changes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

REGISTRY_KEY = "zapreply.inflight"  # hash: an inflight list -> the queue it takes from
INFLIGHT_PREFIX = "zapreply.inflight."  # + channel id (32 hex) + "." + queue
ALIVE_PREFIX = "zapreply.alive."  # + channel id: exists while the channel's owner runs
HEARTBEAT_SECONDS = 2.0
ALIVE_SECONDS = 10

# KEYS: inflight list, unacked index, unacked hash. ARGV: the item, now, delivery tag, record.
# 0 when the item is no longer in the list: it was handed back because the channel looked dead.
_CLAIM = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# KEYS: registry, inflight list, its channel's alive key, the queue. ARGV: the inflight list's
# name, and '1' to hand back even if the owner is alive (the owner itself, closing). Moves the
# list back to the end of the queue a consumer reads next; returns how many, or -1 if the owner
# is alive.
_HAND_BACK = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[4], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('HDEL', KEYS[1], ARGV[1])
return moved
"""


def _alive_key_of(inflight: str) -> str:
    return ALIVE_PREFIX + inflight[len(INFLIGHT_PREFIX):len(INFLIGHT_PREFIX) + 32]


def hand_back_orphans(client: Any) -> int:
    """Put the messages of every channel that stopped renewing its alive key back in their
    queues; returns how many. Any process may run it, any number at once."""
    moved = 0
    for inflight, queue in client.hgetall(REGISTRY_KEY).items():
        inflight = bytes_to_str(inflight)
        result = client.eval(_HAND_BACK, 4, REGISTRY_KEY, inflight, _alive_key_of(inflight),
                             queue, inflight, "0")
        if result > 0:
            log.warning("handed %d message(s) of a vanished consumer back to the queue", result)
            moved += result
    return moved


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        # A message fetched atomically is already in the unacked records (Channel._claim).
        if self.channel._claimed.pop(delivery_tag, None) is not None:
            VirtualQoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS
    _command_client: Any = None
    _inflight_queue: str | None = None  # the queue of the BLMOVE in flight, if one is

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._claimed: dict[str, bool] = {}
        self._inflight_keys: dict[str, str] = {}  # queue -> this channel's inflight list for it
        self._alive_renewed_at = float("-inf")
        super().__init__(*args, **kwargs)

    @cached_property
    def _fetch_id(self) -> str:
        return uuid.uuid4().hex

    @property
    def alive_key(self) -> str:
        return ALIVE_PREFIX + self._fetch_id

    def inflight_key(self, queue_key: str) -> str:
        """This channel's inflight list for `queue_key`, registered (and the channel marked
        alive) before the first fetch into it."""
        key = self._inflight_keys.get(queue_key)
        if key is None:
            key = f"{INFLIGHT_PREFIX}{self._fetch_id}.{queue_key}"
            self._inflight_keys[queue_key] = key
            self.renew_alive(force=True)
        return key

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

    # -- the fetch ------------------------------------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if len(keys) != 1 or self.global_keyprefix:
            self._inflight_queue = None
            return super()._brpop_start(timeout)
        inflight = self.inflight_key(keys[0])
        self.renew_alive()
        self._inflight_queue = keys[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(
            "BLMOVE", keys[0], inflight, "RIGHT", "LEFT",
            self.brpop_timeout if timeout is None else timeout)

    def _brpop_read(self, **options: Any) -> bool:
        queue_key = self._inflight_queue
        if queue_key is None:
            return super()._brpop_read(**options)
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not item:
                raise redis.Empty()
            payload = loads(bytes_to_str(item))
            if not self._claim(queue_key, item, payload):
                raise redis.Empty()
            queue = queue_key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None
            self._inflight_queue = None
            self._flush_brpop_reauth()

    def _poll_error(self, type: str, **options: Any) -> None:
        if type == "BRPOP" and self._inflight_queue is not None:
            self.client.parse_response(self.client.connection, "BLMOVE")
        else:
            super()._poll_error(type, **options)

    def _claim(self, queue_key: str, item: bytes, payload: dict[str, Any]) -> bool:
        """Move the fetched item from the inflight list into the unacked records, in one step."""
        properties = payload["properties"]
        tag = properties["delivery_tag"]
        info = properties["delivery_info"]
        record = dumps([payload, info["exchange"], info["routing_key"]])
        with self.conn_or_acquire() as client:
            claimed = client.eval(_CLAIM, 3, self._inflight_keys[queue_key], self.unacked_index_key,
                                  self.unacked_key, item, time.time(), tag, record)
        if claimed:
            self._claimed[tag] = True
        else:
            log.warning("a fetched message was handed back while this consumer looked dead; "
                        "another consumer takes it")
        return bool(claimed)

    # -- liveness and hand-back ------------------------------------------------------------

    def renew_alive(self, force: bool = False) -> None:
        """Renew this channel's alive key and the registration of its inflight lists, at most
        every HEARTBEAT_SECONDS unless forced (the hub also calls this on a timer). A channel
        taken for dead while it was only slow registers its lists again here."""
        now = time.monotonic()
        if not self._inflight_keys or (
                not force and now - self._alive_renewed_at < HEARTBEAT_SECONDS):
            return
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.set(self.alive_key, 1, ex=ALIVE_SECONDS)
            pipe.hset(REGISTRY_KEY, mapping={key: queue
                                             for queue, key in self._inflight_keys.items()})
            pipe.execute()
        self._alive_renewed_at = now

    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:  # a BLMOVE reply still pending is read, as kombu reads a BRPOP's on close
                self._brpop_read()
            except redis.Empty:
                pass
            except self.connection_errors:
                pass
        if self._inflight_keys and not self.closed:
            try:
                with self.conn_or_acquire() as client:
                    for queue, key in self._inflight_keys.items():
                        client.eval(_HAND_BACK, 4, REGISTRY_KEY, key, self.alive_key, queue,
                                    key, "1")
                    client.delete(self.alive_key)
            except Exception:  # the broker is gone: other workers hand the lists back later
                log.debug("could not hand back the inflight lists on close", exc_info=True)
        super().close()


class Transport(redis.Transport):
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        cycle = self.cycle
        old = getattr(cycle, "_inflight_tref", None)
        if old is not None:
            old.cancel()
        cycle._inflight_tref = loop.call_repeatedly(HEARTBEAT_SECONDS, self._look_after_inflight)

    def _look_after_inflight(self) -> None:
        channels = [c for c in self.cycle._channels if c._inflight_keys]
        for channel in channels:
            try:
                channel.renew_alive(force=True)
            except channel.connection_errors:
                return  # the main loop reconnects; try again on the next tick
        if channels:
            try:
                with channels[0].conn_or_acquire() as client:
                    hand_back_orphans(client)
            except channels[0].connection_errors:
                return
