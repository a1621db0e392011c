"""Prometheus figures of the running receiver (gunicorn, two worker processes summed by the
master on a port of its own) and of a real worker process, after webhooks are answered."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fixture_bytes, running_worker, signed
from tests.e2e import fresh, post, wait_for, wait_for_event
from tests.factories import make_config
from tests.processes import Receiver, free_port

pytestmark = pytest.mark.usefixtures("idle_afterwards")

GENAI = {"gen_ai_operation_name": "chat", "gen_ai_system": "openai",
         "gen_ai_request_model": "stub-model"}


@pytest.fixture(scope="module")
def receiver_with_metrics(migrated: str, base_env: dict[str, str],
                          tmp_path_factory) -> Iterator[tuple[str, str]]:
    port = free_port()
    process = Receiver({**os.environ, **base_env, "RECEIVER_METRICS_PORT": str(port)},
                       free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    yield process.url, f"http://127.0.0.1:{port}/metrics"
    process.stop()


@pytest.fixture(scope="module")
def worker_metrics(migrated: str, base_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    port = free_port()
    with running_worker(base_env, tmp_path_factory, name="metrics",
                        WORKER_METRICS_PORT=str(port)):
        yield f"http://127.0.0.1:{port}/metrics"


def _scrape(url: str) -> str:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    return response.text


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _eventually(url: str, name: str, expected: float, **labels: str) -> str:
    """The scrape once the series reached `expected` (a worker counts a reply just after it
    records it)."""
    found: dict[str, str] = {}

    def reached() -> bool:
        found["text"] = _scrape(url)
        return _value(found["text"], name, **labels) == expected

    wait_for(reached, timeout=20)
    return found["text"]


def test_the_receiver_and_the_worker_count_a_webhook_answered_end_to_end(
        db, receiver_with_metrics, worker_metrics, wuzapi):
    receiver, receiver_metrics = receiver_with_metrics
    make_config(wuzapi.url)
    body = fresh(fixture_bytes("message_text.raw.json"))

    assert post(receiver, body).json()["status"] == "queued"
    unsigned = httpx.post(f"{receiver}/webhooks/wuzapi", content=body,
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert unsigned.status_code == 401
    broken = b'{"type": '
    assert httpx.post(f"{receiver}/webhooks/wuzapi", content=broken, timeout=10, headers={
        "Content-Type": "application/json", **signed(broken)}).status_code == 400
    wuzapi.wait_for(lambda sent: len(sent) >= 1)
    wait_for_event("message.sent")

    served = _scrape(receiver_metrics)
    assert _value(served, "zapreply_webhooks_total", outcome="queued") == 1
    assert _value(served, "zapreply_webhooks_total", outcome="unauthorized") == 1
    assert _value(served, "zapreply_webhooks_total", outcome="bad_request") == 1
    assert _value(served, "zapreply_webhooks_total", outcome="duplicate") == 0

    served = _eventually(worker_metrics, "zapreply_reply_latency_seconds_count", 1)
    latency = _value(served, "zapreply_reply_latency_seconds_sum")
    assert latency is not None and 0 <= latency < 20
    assert _value(served, "gen_ai_client_operation_duration_seconds_count", **GENAI) == 1
    assert _value(served, "gen_ai_client_token_usage_sum", **GENAI,
                  gen_ai_token_type="input") == 42
    assert _value(served, "gen_ai_client_token_usage_sum", **GENAI,
                  gen_ai_token_type="output") == 7
    # Neither the customer's number nor the config's secrets in any label.
    for text in (served, _scrape(receiver_metrics)):
        assert "5511900000001" not in text and "secret-user-token" not in text


def test_a_run_that_fails_for_good_is_counted_by_its_reason(
        db, receiver_with_metrics, worker_metrics, llm, wuzapi):
    receiver, _ = receiver_with_metrics
    make_config(wuzapi.url)
    before = _value(_scrape(worker_metrics), "zapreply_runs_failed_total", reason="llm") or 0
    llm.fail_status = 401  # a bad API key: permanent, the run fails at once
    assert post(receiver, fresh(fixture_bytes("message_text.raw.json"))) \
        .json()["status"] == "queued"
    wait_for_event("run.failed")
    served = _eventually(worker_metrics, "zapreply_runs_failed_total", before + 1, reason="llm")
    assert _value(served, "zapreply_runs_failed_total", reason="send") == 0


def test_the_webhook_port_serves_no_metrics(db, receiver_with_metrics):
    receiver, _ = receiver_with_metrics
    assert httpx.get(f"{receiver}/metrics", timeout=5).status_code == 404


def test_a_receiver_starts_its_figures_afresh_and_leaves_other_files_alone(tmp_path):
    from zapreply.metrics import serving

    (tmp_path / "counter_4242.db").write_bytes(b"old figures")
    (tmp_path / "notes.txt").write_text("not ours")
    assert serving.fresh_directory(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert serving.fresh_directory(tmp_path / "new" / "dir").is_dir()
