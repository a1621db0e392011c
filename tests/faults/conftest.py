"""Fixtures of the fault suite: private services, a parametrized broker, and a `stack` per test.

Every scenario runs once on Redis and once on RabbitMQ (`broker` is parametrized). The
PostgreSQL cluster, the Redis server and the RabbitMQ node are private to this test session
(temporary directories, free loopback ports), so a scenario may restart them; the machine's
shared services are never touched. Each test gets emptied tables, an emptied queue and reset
stand-ins. Scenarios that need nothing but FAULT_ENV share one worker per broker
(`stack.worker()`); the others start their own with their environment (`stack.start_worker()`),
which stops the shared one first so that no worker with another environment takes their tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, WEBHOOK_HMAC_KEY
from tests.faults.harness import ADMIN_TOKEN, FAULT_ENV, Stack
from tests.faults.services import (
    PrivatePostgres,
    PrivateRabbitMQ,
    PrivateRedis,
    ServiceError,
    free_port,
)
from tests.processes import Receiver
from tests.stubs import LLMStub, MessagesStub

TABLES = ("events", "messages", "reply_runs", "conversations", "contact_addresses",
          "workflow_configs")

_metrics: list[dict[str, Any]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not _metrics:
        return
    terminalreporter.section("fault scenarios: measurements")
    for entry in _metrics:
        value = entry["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(
            f"{entry['test']:<60} {entry['broker']:<6} {entry['name']:<34} {shown}")
    path = os.environ.get("FAULTS_METRICS_FILE")
    if path:
        Path(path).write_text(json.dumps(_metrics, indent=2))


# The stand-ins are the suite's own, so no process of another test can reach them.


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
def fault_pg() -> Iterator[tuple[PrivatePostgres, str]]:
    """A private PostgreSQL cluster with the schema built by `alembic upgrade head`."""
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        url = pg.create_database("zapreply")
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise ServiceError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")
    except (ServiceError, OSError, subprocess.TimeoutExpired) as exc:
        pg.destroy()
        pytest.fail(f"could not start a private PostgreSQL for the fault tests: {exc}",
                    pytrace=False)
    yield pg, url
    pg.destroy()


@pytest.fixture(scope="session")
def fault_engine(fault_pg):  # type: ignore[no-untyped-def]
    engine = create_engine(fault_pg[1], pool_pre_ping=True, pool_size=2, max_overflow=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session", params=["redis", "amqp"])
def broker(request) -> Iterator[PrivateRedis | PrivateRabbitMQ]:  # type: ignore[no-untyped-def]
    service = PrivateRedis() if request.param == "redis" else PrivateRabbitMQ()
    try:
        service.start()
    except (ServiceError, OSError) as exc:
        service.destroy()
        pytest.fail(f"could not start a private {request.param} broker: {exc}", pytrace=False)
    yield service
    service.destroy()


@pytest.fixture(scope="session")
def fault_log_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def base_fault_env(fault_pg, broker, llm, fault_log_dir) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "DATABASE_URL": fault_pg[1],
        "CELERY_BROKER_URL": broker.url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "WUZAPI_HMAC_KEY": WEBHOOK_HMAC_KEY,
        "ZAPREPLY_DATA_DIR": str(fault_log_dir / "var"),
        "OPENAI_BASE_URL": f"{llm.url}/v1",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
        **FAULT_ENV,
    }


@pytest.fixture(scope="session")
def fault_receiver(base_fault_env, fault_log_dir, broker) -> Iterator[Receiver]:  # type: ignore[no-untyped-def]
    receiver = Receiver({**os.environ, **base_fault_env}, free_port(),
                        fault_log_dir / f"receiver-{broker.kind}.log")
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def shared_worker(broker) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Holds the worker that a broker's plain scenarios share (see Stack.worker)."""
    holder: dict[str, Any] = {}
    yield holder
    if "worker" in holder:
        holder.pop("worker").kill()


@pytest.fixture
def stack(request, fault_pg, fault_engine, broker, fault_receiver, base_fault_env, llm, wuzapi,
          fault_log_dir, shared_worker) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    # Ids keep growing across scenarios, so a task left from an earlier one (a shared worker may
    # still hold a countdown) cannot name a conversation of this one.
    with fault_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    broker.purge()
    llm.reset()
    llm.fail_status = None
    llm.delay_seconds = 0.0
    wuzapi.reset()
    wuzapi.failures.clear()
    log_dir = fault_log_dir / request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
    log_dir.mkdir(exist_ok=True)
    current = Stack(engine=fault_engine, broker=broker, pg=fault_pg[0], receiver=fault_receiver,
                    base_env=base_fault_env, llm=llm, wuzapi=wuzapi, log_dir=log_dir,
                    metrics=_metrics, test_name=request.node.originalname,
                    shared=shared_worker)
    yield current
    failed = any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    if failed:
        print(f"\n==== worker logs ({log_dir}) ====\n{current.logs()}")
    current.close(failed=failed)
    # A stand-in still sleeping on a killed worker's request must not delay the next test.
    llm.delay_seconds = 0.0
