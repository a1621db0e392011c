"""The receiver's publisher: Celery's send_task by default, or the Redis fast path, whose message
is the one the installed Celery would have sent and whose one connection recovers from a broker
that dropped it."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from zapreply import settings as settings_module
from zapreply.broker.queue import HANDLE_INBOUND, QUEUE, REPLY, Publisher, make_celery

# Anything a payload or a repr may hold: quotes, backslashes, non-ASCII, control characters.
AWKWARD = 'Olá "cliente" \\ \x01 \u2028 日本 🙂'


@pytest.fixture
def broker(broker_url: str) -> redis.Redis:
    client = redis.Redis.from_url(broker_url)
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)


def settings_for(broker_url: str, fast_path: str = "redis") -> settings_module.Settings:
    return settings_module.load({"DATABASE_URL": "postgresql+psycopg://unused@127.0.0.1/x",
                                 "CELERY_BROKER_URL": broker_url,
                                 "PUBLISH_FAST_PATH": fast_path})


@pytest.fixture
def publisher(broker_url: str) -> Publisher:
    """The Redis fast path."""
    return Publisher(settings_for(broker_url))


@pytest.fixture(params=["redis", "off"])
def any_publisher(request: pytest.FixtureRequest, broker_url: str) -> Publisher:
    """Either way of publishing: what the receiver relies on holds for both."""
    return Publisher(settings_for(broker_url, request.param))


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """Every message in the queue, oldest first, with its body decoded."""
    messages = []
    for raw in reversed(client.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        message["body"] = json.loads(base64.b64decode(message["body"]))
        messages.append(message)
    return messages


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    message = json.loads(json.dumps(message))
    for key in ("id", "root_id"):
        message["headers"].pop(key)
    # Celery also copies the reprs into the properties and names a result queue nobody reads
    # (task_ignore_result): the worker looks at neither.
    for key in ("correlation_id", "delivery_tag", "reply_to", "argsrepr", "kwargsrepr"):
        message["properties"].pop(key, None)
    return message


@pytest.mark.parametrize("name, kwargs, kwargsrepr, args", [
    (HANDLE_INBOUND, {"config_id": 7, "message": {"text": AWKWARD, "mentions": []}},
     f"{{'config_id': 7, 'wa_message_id': {AWKWARD!r}}}", None),
    (REPLY, None, "{}", [42]),
])
def test_it_publishes_the_message_celery_would(broker, publisher, broker_url, name, kwargs,
                                               kwargsrepr, args) -> None:
    task_id = publisher.send(name, kwargs, kwargsrepr=kwargsrepr, args=args)
    make_celery(settings_for(broker_url)).send_task(name, args=args or [], kwargs=kwargs or {},
                                    argsrepr=repr(tuple(args or [])), kwargsrepr=kwargsrepr)

    ours, celerys = queued(broker)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == task_id
    assert ours["properties"]["correlation_id"] == task_id
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]
    assert without_ids(ours) == without_ids(celerys)


def test_each_message_has_its_own_ids(broker, any_publisher) -> None:
    first = any_publisher.send(REPLY, args=[1])
    second = any_publisher.send(REPLY, args=[1])
    assert first != second
    tags = {message["properties"]["delivery_tag"] for message in queued(broker)}
    assert len(tags) == 2 and not tags & {first, second}


def test_it_reconnects_after_the_broker_dropped_its_connection(broker, publisher) -> None:
    publisher.send(REPLY, args=[1])
    db = broker.connection_pool.connection_kwargs.get("db", 0)
    killed = [client for client in broker.client_list()
              if client["cmd"] == "lpush" and int(client["db"]) == db]
    assert killed
    for client in killed:
        broker.client_kill_filter(_id=client["id"])

    # The server closed the socket (as a Redis restart does): the next publish notices before
    # sending and reconnects, so no webhook is answered 503 for it.
    publisher.send(REPLY, args=[2])
    publisher.send(REPLY, args=[3])
    publisher.ping()
    assert [message["body"][0] for message in queued(broker)] == [[1], [2], [3]]


@pytest.mark.parametrize("fast_path", ["redis", "off"])
def test_an_unreachable_broker_raises_one_of_its_errors(fast_path: str) -> None:
    publisher = Publisher(settings_for("redis://127.0.0.1:1/0", fast_path))
    expected = (KombuOperationalError, OSError, *publisher.errors)
    with pytest.raises(expected):
        publisher.send(REPLY, args=[1])
    with pytest.raises(expected):
        publisher.ping()


def test_by_default_the_receiver_publishes_through_the_redis_fast_path(
        broker, broker_url, monkeypatch) -> None:
    publisher = Publisher(settings_module.load({
        "DATABASE_URL": "postgresql+psycopg://unused@127.0.0.1/x",
        "CELERY_BROKER_URL": broker_url}))
    monkeypatch.setattr(type(publisher), "celery", property(lambda _: pytest.fail("send_task")))
    task_id = publisher.send(REPLY, args=[1])
    assert [message["headers"]["id"] for message in queued(broker)] == [task_id]


def test_with_the_fast_path_off_it_publishes_through_send_task(broker, broker_url) -> None:
    publisher = Publisher(settings_for(broker_url, "off"))
    sent: list[str] = []
    send_task = publisher.celery.send_task
    publisher.celery.send_task = lambda name, **options: (sent.append(name),
                                                          send_task(name, **options))[1]
    with publisher.publishing(HANDLE_INBOUND, {"config_id": 1}) as task_id:
        pass
    assert sent == [HANDLE_INBOUND]
    assert [message["headers"]["id"] for message in queued(broker)] == [task_id]
    assert publisher.queue_depth() == 1


def test_an_unknown_fast_path_is_refused_at_start() -> None:
    with pytest.raises(settings_module.ImproperlyConfigured, match="PUBLISH_FAST_PATH"):
        settings_for("redis://127.0.0.1:6379/0", "memcached")


def test_the_task_is_queued_when_the_block_ends(broker, any_publisher) -> None:
    with any_publisher.publishing(REPLY, args=[1]) as task_id:
        answer = f"queued {task_id}"
    assert answer.endswith(task_id)
    assert [message["headers"]["id"] for message in queued(broker)] == [task_id]


def test_a_block_that_raises_leaves_no_reply_behind(broker, publisher) -> None:
    with pytest.raises(RuntimeError), publisher.publishing(REPLY, args=[1]):
        raise RuntimeError("failed while the task was being published")
    # The next command gets its own reply, not the LPUSH's left unread.
    publisher.ping()
    task_id = publisher.send(REPLY, args=[2])
    assert queued(broker)[-1]["headers"]["id"] == task_id


def test_task_ids_are_random_uuids(broker, any_publisher) -> None:
    ids = [any_publisher.send(REPLY, args=[n]) for n in range(50)]
    tags = [message["properties"]["delivery_tag"] for message in queued(broker)]
    for value in ids + tags:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len(set(ids + tags)) == 100
