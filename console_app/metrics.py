"""GET /metrics for Prometheus: what no single receiver or worker can count, read once per
deployment from the database and the broker — conversations by state and the tasks waiting in
the queue. Receivers and workers serve their own counts on ports of their own
(zapreply.metrics).

A bearer token (METRICS_TOKEN) guards it, as the console is reachable by people; without one
set the route answers 404. Figures are kept 10 s: a scrape every few seconds by two Prometheus
servers costs the database one GROUP BY per 10 s per console process."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from console_app import context
from zapreply.actions import dashboard
from zapreply.storage.db import session_scope

bp = Blueprint("metrics", __name__)

CACHE_SECONDS = 10.0
EXTENSION = "zapreply.metrics"


class DeploymentFigures(Collector):
    """Conversations by state and queue depth, read at most once per CACHE_SECONDS."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._read_at = -CACHE_SECONDS
        self._families: list[GaugeMetricFamily] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._families = self._read()
                self._read_at = time.monotonic()
            return iter(list(self._families))

    def _read(self) -> list[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "zapreply_conversations", "Conversations by state: bot (answered), paused (a timed "
            "pause), held (with a person until given back)", labels=["state"])
        with session_scope() as session:
            for state, count in dashboard.conversations_by_state(session).items():
                states.add_metric([state], count)
        families = [states]
        try:
            depth = context.publisher().queue_depth()
        except Exception:  # noqa: BLE001 - a broker that cannot be asked: the series is absent
            current_app.logger.warning("metrics: queue depth unknown")
        else:
            queue = GaugeMetricFamily("zapreply_queue_depth",
                                      "Tasks waiting in the broker's queue")
            queue.add_metric([], depth)
            families.append(queue)
        return families


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentFigures(app))
    app.extensions[EXTENSION] = registry


@bp.get("/metrics")
def scrape() -> Response:
    token = context.settings().metrics_token
    if token is None:
        abort(404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return Response("a bearer token (METRICS_TOKEN) is needed\n", 401,
                        {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    return Response(generate_latest(current_app.extensions[EXTENSION]),
                    mimetype=CONTENT_TYPE_LATEST)
