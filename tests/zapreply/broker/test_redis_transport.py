"""The worker's Redis transport: a fetch after which a message is always in the queue, in the
consumer's inflight list or in the unacked records (so a consumer that dies at any point loses
nothing), and one redis-py client kept per channel."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Queue

from zapreply import settings as settings_module
from zapreply.broker import redis_transport as broker_module
from zapreply.broker.queue import make_celery


def settings_for(broker_url: str) -> settings_module.Settings:
    return settings_module.load({"DATABASE_URL": "postgresql+psycopg://unused@127.0.0.1/x",
                                 "CELERY_BROKER_URL": broker_url})


@pytest.fixture
def broker(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url)
    yield client
    for key in client.hkeys(broker_module.REGISTRY_KEY):
        client.delete(key)
    client.delete(broker_module.REGISTRY_KEY)
    for key in client.scan_iter(f"{broker_module.ALIVE_PREFIX}*"):
        client.delete(key)


@pytest.fixture
def queue() -> Queue:
    return Queue(f"test-atomic-{uuid.uuid4().hex}")


def connect(broker_url: str) -> Connection:
    """A connection the way the worker makes one (its transport options included)."""
    return make_celery(settings_for(broker_url)).connection_for_write()


def publish(connection: Connection, queue: Queue, body: dict[str, Any]) -> None:
    connection.Producer().publish(body, routing_key=queue.name, declare=[queue])


def fetch_without_reading(channel: broker_module.Channel, broker: redis.Redis,
                          queue: Queue) -> bytes:
    """Send the channel's fetch and wait until the server has carried it out, leaving the
    reply unread: the state of a worker that dies right after the server answered."""
    channel.connection.cycle.on_poll_start()  # what the worker's loop does before it polls
    deadline = time.monotonic() + 5
    while (raw := broker.lindex(channel.inflight_key(queue.name), 0)) is None:
        assert time.monotonic() < deadline, "the server did not carry out the fetch"
        time.sleep(0.01)
    return raw


def test_a_fetched_message_is_recorded_unacked_before_it_is_handed_to_the_consumer(
        broker, broker_url, queue) -> None:
    with connect(broker_url) as connection:
        publish(connection, queue, {"n": 1})
        seen: list[tuple[Any, int, int]] = []

        def on_message(body: Any, message: Any) -> None:
            channel = message.channel
            seen.append((body, broker.llen(channel.inflight_key(queue.name)),
                         broker.hexists("unacked", message.delivery_tag)))
            message.ack()

        with connection.Consumer(queue, callbacks=[on_message]) as consumer:
            connection.drain_events(timeout=5)
            channel = consumer.channel
            # The channel's inflight list is known, and its owner alive, for as long as it runs.
            assert broker.hget(broker_module.REGISTRY_KEY, channel.inflight_key(queue.name)) \
                == queue.name.encode()
            assert broker.ttl(channel.alive_key) > 0
        # In the consumer's hands it was out of the inflight list and in the unacked records;
        # acked, it is nowhere.
        assert seen == [({"n": 1}, 0, 1)]
        assert broker.llen(queue.name) == 0
        assert not broker.exists(channel.inflight_key(queue.name))


def test_the_message_of_a_consumer_that_died_after_the_fetch_goes_back_to_the_queue(
        broker, broker_url, queue) -> None:
    with connect(broker_url) as dead, connect(broker_url) as alive:
        publish(alive, queue, {"n": 2})
        channel = dead.channel()
        channel.basic_consume(queue.name, no_ack=False, callback=lambda message: None,
                              consumer_tag="test")
        raw = fetch_without_reading(channel, broker, queue)
        assert broker.llen(queue.name) == 0 and broker.hlen("unacked") == 0

        # While the owner renews its alive key, its list is left alone.
        assert broker_module.hand_back_orphans(broker) == 0
        assert broker.lrange(channel.inflight_key(queue.name), 0, -1) == [raw]

        # It died: the key expires (here at once), and the next look hands its message back.
        broker.delete(channel.alive_key)
        assert broker_module.hand_back_orphans(broker) == 1
        assert broker.lrange(queue.name, 0, -1) == [raw]
        assert not broker.exists(channel.inflight_key(queue.name))
        assert not broker.hexists(broker_module.REGISTRY_KEY, channel.inflight_key(queue.name))

        received: list[Any] = []
        with alive.Consumer(queue, callbacks=[
                lambda body, message: (received.append(body), message.ack())]):
            alive.drain_events(timeout=5)
        assert received == [{"n": 2}]


def test_a_consumer_only_slow_drops_what_was_handed_back_meanwhile(
        broker, broker_url, queue) -> None:
    with connect(broker_url) as slow:
        publish(slow, queue, {"n": 3})
        channel = slow.channel()
        delivered: list[Any] = []
        channel.basic_consume(queue.name, no_ack=False, callback=delivered.append,
                              consumer_tag="test")
        raw = fetch_without_reading(channel, broker, queue)
        broker.delete(channel.alive_key)
        assert broker_module.hand_back_orphans(broker) == 1

        # The owner wakes up and reads the reply it was sent: it must not run the message,
        # which is back in the queue for whoever takes it next.
        with pytest.raises(broker_module.redis.Empty):
            channel._brpop_read()
        assert delivered == []
        assert broker.lrange(queue.name, 0, -1) == [raw]
        assert broker.hlen("unacked") == 0


def test_a_closing_channel_hands_back_what_it_fetched(broker, broker_url, queue) -> None:
    with connect(broker_url) as connection:
        publish(connection, queue, {"n": 4})
        channel = connection.channel()
        channel.basic_consume(queue.name, no_ack=False, callback=lambda message: None,
                              consumer_tag="test")
        fetch_without_reading(channel, broker, queue)
        channel.close()
        # Read on close like kombu's own BRPOP reply, recorded unacked, then restored: either
        # way the message is in the queue again and nothing of the channel is left behind.
        assert broker.llen(queue.name) == 1
        assert broker.hlen("unacked") == 0
        assert not broker.exists(channel.inflight_key(queue.name))
        assert not broker.exists(channel.alive_key)
        assert not broker.hexists(broker_module.REGISTRY_KEY, channel.inflight_key(queue.name))


def test_a_channel_reading_several_lists_fetches_as_kombu_does(broker, broker_url) -> None:
    first, second = (Queue(f"test-two-{uuid.uuid4().hex}") for _ in range(2))
    with connect(broker_url) as connection:
        publish(connection, first, {"n": 5})
        publish(connection, second, {"n": 6})
        received: list[Any] = []
        with connection.Consumer([first, second], callbacks=[
                lambda body, message: (received.append(body), message.ack())]) as consumer:
            connection.drain_events(timeout=5)
            connection.drain_events(timeout=5)
            assert not consumer.channel._inflight_keys
        assert sorted(body["n"] for body in received) == [5, 6]


def test_on_redis_the_worker_app_uses_the_transport_that_keeps_its_client(broker_url) -> None:
    app = make_celery(settings_for(broker_url))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker_module.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()


def test_the_kept_client_goes_with_the_pool_kombu_drops(broker_url) -> None:
    app = make_celery(settings_for(broker_url))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._disconnect_pools()  # what kombu does after a connection error
        with channel.conn_or_acquire() as after:
            assert after is not before
            assert after.connection_pool is channel.pool
            assert after.ping()


def test_a_client_handed_in_is_used_as_it_is(broker_url) -> None:
    app = make_celery(settings_for(broker_url))
    given = redis.Redis.from_url(broker_url)
    with app.connection_for_write() as connection:
        with connection.default_channel.conn_or_acquire(given) as used:
            assert used is given


def test_events_and_acks_go_through_the_kept_client(broker, broker_url) -> None:
    app = make_celery(settings_for(broker_url))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as kept:
            pass
        received: list[Any] = []
        queue = f"test-kept-client-{uuid.uuid4().hex}"
        producer = connection.Producer()
        producer.publish({"n": 1}, routing_key=queue, declare=[Queue(queue)])
        with connection.Consumer(Queue(queue), callbacks=[
                lambda body, message: (received.append(body), message.ack())]):
            connection.drain_events(timeout=5)
        assert received == [{"n": 1}]
        assert channel._command_client is kept
        assert broker.llen(queue) == 0
