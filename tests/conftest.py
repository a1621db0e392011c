"""Shared fixtures: a real PostgreSQL database built by `alembic upgrade head`, a real Redis
broker, local stand-ins for the LLM provider and WuzAPI, and a real Celery worker process.

The services are required: a missing PostgreSQL or Redis fails the run with a message saying
how to start it, rather than skipping tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from tests.stubs import LLMStub, MessagesStub
from tests.wire import stamped_now
from zapreply import settings as settings_module
from zapreply.rules import configs
from zapreply.storage.db import get_engine, reset_engines

# The end-to-end fixtures (receiver process, idle_afterwards) live beside the helpers they use.
pytest_plugins = ["tests.e2e"]

ROOT = Path(__file__).resolve().parent.parent
# WuzAPI's wire formats (see tests/fixtures/wuzapi/README.md): the tests read nothing outside
# the repository.
FIXTURES = ROOT / "tests" / "fixtures" / "wuzapi"
# A 16×16 JPEG (CPython's imghdr test image), as WhatsApp's JPEGThumbnail carries one: base64.
JPEG_THUMBNAIL = base64.b64encode(
    (ROOT / "tests" / "fixtures" / "media" / "thumbnail.jpg").read_bytes()).decode()

def fixture_bytes(name: str) -> bytes:
    """A fixture's body as WuzAPI would post it now (its Timestamp: see tests/wire.py)."""
    return stamped_now((FIXTURES / name).read_bytes())


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Per-run database and Redis db, so concurrent runs on one machine never share state.
RUN_ID = os.getpid()
REDIS_SERVER = "redis://127.0.0.1:6379"


def _claim_redis_db() -> int:
    """A Redis db (1-15) no other live test run on this machine uses: claimed by a key in db 0
    holding this run's pid, taken over from a run whose process is gone, given back at exit.
    Another run's worker on the same db would take this run's tasks."""
    import atexit

    try:
        claims = redis.Redis.from_url(f"{REDIS_SERVER}/0", socket_connect_timeout=3)
        for number in range(1, 16):
            key = f"zapreply-tests:db:{number}"
            if not claims.set(key, RUN_ID, nx=True, ex=6 * 3600):
                owner = claims.get(key)
                if owner is None or _alive(int(owner)):
                    continue
                claims.set(key, RUN_ID, ex=6 * 3600)
            redis.Redis.from_url(f"{REDIS_SERVER}/{number}").flushdb()
            atexit.register(_give_back, claims, key)
            return number
    except redis.RedisError:
        pass  # the broker_url fixture says clearly that Redis is missing
    return 1 + RUN_ID % 15


def _give_back(claims: redis.Redis, key: str) -> None:
    if claims.get(key) == str(RUN_ID).encode():
        claims.delete(key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


REDIS_URL = os.environ.get("TEST_REDIS_URL") or f"{REDIS_SERVER}/{_claim_redis_db()}"
ADMIN_TOKEN = "test-admin-token"
# The key WuzAPI's global webhook signs with (WUZAPI_HMAC_KEY) in every process the tests start:
# deliveries are authenticated the way a deployment's are.
WEBHOOK_HMAC_KEY = "test-global-hmac-key-0123456789abcdef"
TABLES = ("events", "messages", "reply_runs", "conversations", "contact_addresses",
          "workflow_configs", "operators", "sign_in_failures", "send_pacing")


def _database_name() -> str:
    return f"zapreply_test_{RUN_ID}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = _database_name()
    try:
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required for the tests ({PG_SERVER}): {exc}. "
            "Start it, or point TEST_POSTGRES_URL at one.",
            pytrace=False,
        )
    base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    yield url
    reset_engines()
    with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is required for the tests ({REDIS_URL}): {exc}. "
            "Start it, or point TEST_REDIS_URL at one.",
            pytrace=False,
        )
    return REDIS_URL


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMStub]:
    stub = LLMStub().start()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def wuzapi() -> Iterator[MessagesStub]:
    stub = MessagesStub().start()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def base_env(database_url: str, broker_url: str, llm: LLMStub, tmp_path_factory) -> dict[str, str]:
    """Environment of every zapreply process the tests start (and of this one's settings)."""
    return {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "WUZAPI_HMAC_KEY": WEBHOOK_HMAC_KEY,
        "ZAPREPLY_DATA_DIR": str(tmp_path_factory.mktemp("var")),
        "OPENAI_BASE_URL": f"{llm.url}/v1",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LLM_TIMEOUT_SECONDS": "10",
        "LEASE_SECONDS": "30",
        "CONFIG_CACHE_SECONDS": "0",
        "WORKER_CONCURRENCY": "8",
    }


@pytest.fixture(scope="session")
def migrated(base_env: dict[str, str]) -> str:
    settings_module.override(settings_module.load(base_env))
    reset_engines()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")
    return base_env["DATABASE_URL"]


def migrated_sqlite(path: Path, base_env: dict[str, str], **extra_env: str) -> dict[str, str]:
    """The tests' environment with its own SQLite database at `path`, migrated to head by a
    runtime bound for the purpose (as a command binds one); the process's settings and
    database are left as they were."""
    from zapreply.runtime import Runtime

    env = {**base_env, "DATABASE_URL": f"sqlite:///{path}", **extra_env}
    runtime = Runtime.build(settings_module.load(env))
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    with runtime.bound():
        command.upgrade(config, "head")
    return env


@pytest.fixture
def settings(migrated: str, base_env: dict[str, str], monkeypatch) -> settings_module.Settings:
    current = settings_module.load(base_env)
    settings_module.override(current)
    # litellm reads provider settings from the environment itself.
    for key in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LITELLM_LOCAL_MODEL_COST_MAP"):
        monkeypatch.setenv(key, base_env[key])
    return current


def _empty_tables(attempts: int = 5) -> None:
    """TRUNCATE every table. A worker process of an earlier test may still be in a background
    transaction (its sweeper, a lease renewal): PostgreSQL then breaks the deadlock by failing
    one side, and if that is this TRUNCATE it is simply tried again."""
    for attempt in range(attempts):
        try:
            with get_engine().begin() as connection:
                connection.execute(
                    text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            return
        except sqlalchemy.exc.OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) \
                    or attempt == attempts - 1:
                raise


@pytest.fixture
def db(settings: settings_module.Settings, llm: LLMStub, wuzapi: MessagesStub) -> Iterator[None]:
    """A clean database, queue and stand-ins for each test.

    Tests that drive a worker process cannot share a rolled-back transaction with it, so every
    test starts from emptied tables instead.
    """
    _empty_tables()
    # Only the queue: kombu keeps its exchange bindings in the same Redis database.
    redis.Redis.from_url(REDIS_URL).delete("zapreply")
    llm.reset()
    llm.fail_status = None
    llm.delay_seconds = 0.0
    llm.stream_delay_seconds = 0.0
    wuzapi.reset()
    wuzapi.failures.clear()
    configs.clear_cache()
    yield


@pytest.fixture
def database_env() -> dict[str, str]:
    """Settings the `database` fixture's tests run with, on top of the suite's: a module
    overrides this fixture to change them."""
    return {}


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request, db: None, base_env: dict[str, str], database_env: dict[str, str],
             tmp_path: Path) -> Iterator[str]:
    """The test runs twice: on the suite's PostgreSQL database (emptied), and on a new SQLite
    file built by `alembic upgrade head`, as the embedded default is. PostgreSQL takes the
    storage's fast paths, SQLite the portable statements they are checked against: a test
    using this fixture expects the same outcome from both."""
    env = {**base_env, **database_env}
    if request.param == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'zapreply.db'}"
    settings_module.override(settings_module.load(env))
    reset_engines()
    if request.param == "sqlite":
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")
    configs.clear_cache()
    yield request.param
    settings_module.override(settings_module.load(base_env))
    reset_engines()
    configs.clear_cache()


@pytest.fixture
def app(db: None, base_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """The receiver, its database's connections closed afterwards (the app is frozen out of
    the garbage collector: its pool would stay open as long as this process)."""
    from webhook_app import create_app
    from webhook_app.extension import runtime_of

    app = create_app(base_env)
    yield app
    runtime_of(app).database.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def signed(body: bytes, key: str = WEBHOOK_HMAC_KEY) -> dict[str, str]:
    """The `x-hmac-signature` header WuzAPI sends with `body` when it signs with `key`."""
    return {"x-hmac-signature": hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}


def wait_until_idle(timeout: float = 30.0) -> None:
    """Block until the broker holds no task, queued or in progress (a worker holds every task it
    runs, and every countdown, as unacked until it finishes)."""
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout
    while client.llen("zapreply") or client.hlen("unacked"):
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not finish its tasks in time")
        time.sleep(0.05)


def queued_tasks() -> list[str]:
    """Names of the tasks waiting in the test broker's queue."""
    import json

    client = redis.Redis.from_url(REDIS_URL)
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange("zapreply", 0, -1)]


@contextmanager
def running_worker(base_env: dict[str, str], tmp_path_factory, name: str = "test",
                   **extra_env: str) -> Iterator[subprocess.Popen]:
    """A real `celery -A worker worker` process with the tests' environment (plus `extra_env`),
    ready when entered and stopped on exit; its log is at `process.log_path`."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, **base_env, "PYTHONUNBUFFERED": "1", **extra_env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
             "--hostname", f"{name}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"worker did not start:\n{log_path.read_text()[-4000:]}", pytrace=False)
        time.sleep(0.1)
    process.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def worker_process(migrated: str, base_env: dict[str, str], tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A real `celery -A worker worker` process for the tests of one module. Module-scoped: other
    modules inspect the queue and must not have a worker draining it."""
    with running_worker(base_env, tmp_path_factory) as process:
        yield process
