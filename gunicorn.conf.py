"""gunicorn's settings for the receiver: `gunicorn 'webhook_app:create_app()'` reads this file
from the working directory. Command-line flags and GUNICORN_CMD_ARGS still win over it.
`gunicorn 'console_app:create_app()'` reads it too and gets the console's settings instead (at
the end of this file).

Chosen for clients that are slow on purpose or by accident (WuzAPI over a long link):

- gthread workers. A sync worker is one request at a time: two clients trickling a body held
  both workers until the heartbeat timeout killed them, with every webhook in between waiting
  (31 s, measured). A threaded worker's main loop keeps accepting and heartbeating while threads
  read; a connection that has sent nothing waits in the poller, not on a thread (gunicorn 27);
  WuzAPI's kept-alive connections cost no thread between webhooks.
- Reading the headers, then the body, is each bounded by WEBHOOK_READ_TIMEOUT_SECONDS (the
  connection closed; a 408), so a slow sender holds a thread for at most that long twice;
  RECEIVER_THREADS × WEB_CONCURRENCY senders at once are needed to make a webhook wait, and a
  buffering proxy in front (docker-compose.yml) takes even that away.
- Small header limits: WuzAPI sends half a dozen headers and a short request line.
"""

import os
import sys
from pathlib import Path

from zapreply.settings import load

_settings = load()

bind = [_settings.receiver_bind]
workers = _settings.receiver_workers
# gthread, with a deadline on reading request headers (webhook_app/server.py).
worker_class = "webhook_app.server.ReceiverWorker"
threads = _settings.receiver_threads
# Open connections a worker holds, kept-alive ones included; past it the listen backlog waits.
worker_connections = 200
# The heartbeat: in gthread the main loop beats, so only a wedged process is killed.
timeout = 30
graceful_timeout = 25
# WuzAPI (Go's http.Transport) reuses a connection when its next webhook comes within this;
# idle kept-alive connections cost a poller entry, no thread.
keepalive = 5
# WuzAPI's request line is the webhook path (a secret path included) and its headers are few; a
# proxy adds its X-Forwarded-* ones.
limit_request_line = 2048
limit_request_fields = 32
limit_request_field_size = 4096
# The heartbeat file in memory: a disk-backed overlay can stall it under load.
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"

console = any(arg.startswith("console_app") for arg in sys.argv[1:])

if _settings.receiver_metrics_port and not console:
    # Prometheus: every worker process counts into files of one directory (prometheus_client's
    # multiprocess mode, which reads this variable when a worker first imports it), and this
    # master serves their sum on RECEIVER_METRICS_PORT, apart from the webhook port. Workers
    # that gunicorn replaces keep counting in the sum; a worker's files stay after it exits.
    _metrics_dir = _settings.metrics_dir or \
        _settings.data_dir / f"metrics-receiver-{_settings.receiver_metrics_port}"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
    # After the variable is set: the workers forked from here inherit the module as imported.
    from zapreply.metrics import serving as _metrics

    _metrics.fresh_directory(_metrics_dir)

    def when_ready(server):  # gunicorn calls it
        _metrics.serve_directory(_metrics_dir, _settings.receiver_metrics_port,
                                 _settings.metrics_address)

    def child_exit(server, worker):  # gunicorn calls it
        _metrics.process_gone(_metrics_dir, worker.pid)

if console:
    # The operator console: a few people, pages and short requests. Plain gthread workers;
    # its live updates are short server-sent-event answers the browser asks again for
    # (console_app/live.py), so an open page holds no thread between them.
    bind = [_settings.console_bind]
    workers = _settings.console_workers
    worker_class = "gthread"
    threads = _settings.console_threads
    limit_request_line = 8190
    limit_request_fields = 100
    limit_request_field_size = 8190
