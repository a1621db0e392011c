"""What keeps a dead worker's tasks from staying away long: the broker settings the worker runs
with, and countdowns that never outlast Redis's visibility timeout."""

from __future__ import annotations

from typing import Any

import pytest

import worker.replies as worker_replies
from zapreply import settings as settings_module
from zapreply.broker.queue import celery_config


def settings_for(broker_url: str, **env: str) -> settings_module.Settings:
    return settings_module.load({"DATABASE_URL": "postgresql+psycopg://unused@127.0.0.1/x",
                                 "CELERY_BROKER_URL": broker_url, **env})


def test_on_redis_a_worker_takes_a_task_only_when_a_slot_is_free() -> None:
    config = celery_config(settings_for("redis://127.0.0.1:6379/0"))
    assert config["worker_disable_prefetch"] is True
    assert config["broker_transport_options"]["visibility_timeout"] == 30


def test_on_rabbitmq_a_vanished_worker_is_noticed_by_heartbeats() -> None:
    config = celery_config(settings_for("amqp://guest:guest@127.0.0.1:5672//"))
    assert config["broker_heartbeat"] == 10
    assert "worker_disable_prefetch" not in config


def test_a_visibility_timeout_shorter_than_the_database_backoff_allows_is_refused() -> None:
    with pytest.raises(settings_module.ImproperlyConfigured, match="VISIBILITY_TIMEOUT"):
        settings_for("redis://127.0.0.1:6379/0", VISIBILITY_TIMEOUT_SECONDS="15")


def test_a_task_may_run_longer_than_the_visibility_timeout() -> None:
    settings = settings_for("redis://127.0.0.1:6379/0", VISIBILITY_TIMEOUT_SECONDS="16",
                            TASK_TIME_LIMIT_SECONDS="300")
    assert settings.longest_countdown_seconds == 8


@pytest.mark.parametrize("wait, scheduled", [(120.0, 15.0), (3.0, 3.0)])
def test_a_long_wait_is_scheduled_in_hops_shorter_than_half_the_visibility_timeout(
        monkeypatch, wait: float, scheduled: float) -> None:
    monkeypatch.setattr(settings_module, "_process_settings",
                        settings_for("redis://127.0.0.1:6379/0"))
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(worker_replies.reply, "apply_async", lambda **options: sent.append(options))

    worker_replies.later(42, wait)

    assert sent == [{"args": [42], "countdown": scheduled}]
