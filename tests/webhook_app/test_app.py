"""create_app builds the receiver from its own settings: two receivers with different settings
live in one process, each serving with its own settings and database, and making one leaves
the process's settings as they were."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from tests.conftest import migrated_sqlite, signed
from tests.webhook_app.test_webhooks import JSON, compact, load_envelope
from webhook_app.extension import runtime_of
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig


def add_config(app, instance: str, is_active: bool = True) -> None:  # type: ignore[no-untyped-def]
    with runtime_of(app).bound(), session_scope() as session:
        session.add(WorkflowConfig(
            name=instance, instance=instance, is_active=is_active, model="openai/stub",
            system_prompt="", debounce_seconds=0.0, options={},
            send={"driver": "wuzapi", "base_url": "http://127.0.0.1:9", "token": "t"}))


def body_for(instance: str) -> bytes:
    envelope = load_envelope("message_text.json")
    envelope["instanceName"] = instance
    del envelope["userID"]
    return compact(envelope)


def status_of(client, body: bytes) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    response = client.post("/webhooks/wuzapi", data=body,
                           headers={"Content-Type": JSON, **signed(body)})
    answer = response.get_json()
    return response.status_code, answer.get("reason") or answer.get("status") or answer["error"]


def test_two_apps_in_one_process_each_serve_with_their_own_settings_and_database(
        db, base_env, tmp_path) -> None:
    from webhook_app import create_app

    process_settings = get_settings()
    small = create_app(migrated_sqlite(tmp_path / "a.db", base_env, WEBHOOK_MAX_BODY_BYTES="4096"))
    large = create_app(migrated_sqlite(tmp_path / "b.db", base_env))
    add_config(small, "loja-a")
    add_config(large, "loja-b")
    try:
        assert get_settings() is process_settings
        to_small, to_large = small.test_client(), large.test_client()

        assert status_of(to_small, body_for("loja-a")) == (200, "queued")
        assert status_of(to_large, body_for("loja-a")) == (
            200, "no active workflow config for this instance")
        assert status_of(to_large, body_for("loja-b")) == (200, "queued")
        assert status_of(to_small, body_for("loja-b")) == (
            200, "no active workflow config for this instance")

        envelope = json.loads(body_for("loja-b"))
        envelope["event"]["Info"]["ID"] = "3EB0LARGER"
        envelope["event"]["Message"]["conversation"] = "x" * 5000
        padded = compact(envelope)
        assert status_of(to_small, padded) == (413, "request body is larger than the limit")
        assert status_of(to_large, padded) == (200, "queued")

        # Outside their requests, the process still reads its own settings and database.
        assert get_settings() is process_settings
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(WorkflowConfig)) == 0
    finally:
        runtime_of(small).database.dispose()
        runtime_of(large).database.dispose()


def test_two_apps_caching_the_same_instance_each_route_it_by_their_own_database(
        db, base_env, tmp_path) -> None:
    from webhook_app import create_app

    answering = create_app(migrated_sqlite(tmp_path / "a.db", base_env, CONFIG_CACHE_SECONDS="60"))
    paused = create_app(migrated_sqlite(tmp_path / "b.db", base_env, CONFIG_CACHE_SECONDS="60"))
    add_config(answering, "loja")
    add_config(paused, "loja", is_active=False)
    try:
        assert status_of(answering.test_client(), body_for("loja")) == (200, "queued")
        assert status_of(paused.test_client(), body_for("loja")) == (
            200, "no active workflow config for this instance")
    finally:
        runtime_of(answering).database.dispose()
        runtime_of(paused).database.dispose()


def test_each_app_keeps_its_own_pool_size(db, base_env, tmp_path) -> None:
    from webhook_app import create_app

    app = create_app({**base_env, "RECEIVER_THREADS": "3"})
    other = create_app({**base_env, "RECEIVER_THREADS": "12"})

    assert (runtime_of(app).database.pool_size, runtime_of(other).database.pool_size) == (3, 12)
    assert runtime_of(app).settings.receiver_threads == 3
