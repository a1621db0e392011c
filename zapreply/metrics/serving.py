"""Serving the series over HTTP for Prometheus, on a port of each process's own.

- A worker process (the threads pool: every task runs in it) serves its own registry.
- A receiver is a gunicorn master and several worker processes that come and go: they write
  their figures to files in one directory (prometheus_client's multiprocess mode), and the
  master serves the sum over them, one target per host (gunicorn.conf.py).
- The console serves what is read from the database and the broker (console_app.metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

# Whether this process serves its figures: the worker reads the database for the reply time
# only then.
enabled = False


def serve(port: int, address: str, registry: CollectorRegistry | None = None) -> None:
    """Serve `registry` (the process's default one) at http://address:port/metrics, from a
    daemon thread."""
    global enabled
    if registry is None:
        start_http_server(port, address)
    else:
        start_http_server(port, address, registry=registry)
    enabled = True
    log.info("metrics: serving Prometheus figures on %s:%s", address, port)


def fresh_directory(path: Path) -> Path:
    """The multiprocess directory, made if missing, without the figure files of an earlier run
    (they would be added to this run's counters). Only prometheus_client's `*.db` files go:
    PROMETHEUS_MULTIPROC_DIR may name a directory that holds more."""
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def serve_directory(path: Path, port: int, address: str) -> None:
    """Serve the sum of the figures the processes write into `path`."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    serve(port, address, registry)


def process_gone(path: Path, pid: int) -> None:
    """A process of the directory ended: its gauges go (its counters and histograms stay, as
    prometheus_client keeps them for the sum)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
