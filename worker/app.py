from __future__ import annotations

import gc
import logging
import os
from typing import Any

from celery import Task, signals

from zapreply.broker.queue import make_celery
from zapreply.runtime import Runtime
from zapreply.settings import apply_litellm_environment, get_settings
from zapreply.storage.db import reset_engines

apply_litellm_environment()


class RuntimeTask(Task):
    """Runs with its app's runtime bound, so that the pipeline's `get_settings()` and
    `session_scope()` answer with the worker's settings and database."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.app.runtime.bound():
            # Celery's tracer has pushed this delivery's request already; Task.__call__ would
            # push another, without its id and hostname.
            return self.run(*args, **kwargs)


_settings = get_settings()
app = make_celery(_settings, task_cls=RuntimeTask)
# No liveness round trip at each checkout: a worker would pay one per transaction, and a
# connection that died with the server fails the task, which is retried.
app.runtime = Runtime.build(_settings, pre_ping=False)
app.conf.imports = ("worker.inbound", "worker.replies", "worker.playground")


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # Pooled connections must not be shared between a parent and its forked children.
    app.runtime.database.dispose(close=False)
    reset_engines()


@signals.worker_ready.connect
def _start_sweeper(**_: object) -> None:
    from zapreply.actions import knowledge_urls, privacy
    from zapreply.broker.queue import REPLY
    from zapreply.replies import sweeper

    # Their threads run in the context they are started from: bound to this app's runtime.
    with app.runtime.bound():
        sweeper.start(lambda conversation_id: app.send_task(REPLY, args=[conversation_id]))
        # Retention, on its own interval: a long purge must not delay the sweeps.
        privacy.start()
        # Knowledge documents due to be read from their URL, fetched here, never by the
        # receiver that took them.
        knowledge_urls.start()


@signals.worker_ready.connect
def _serve_metrics(**_: object) -> None:
    settings = app.runtime.settings
    if not settings.worker_metrics_port:
        return
    from zapreply.metrics import serving

    if settings.worker_pool not in ("threads", "solo"):
        # Tasks would count in the pool's child processes, which this server cannot see.
        logging.getLogger(__name__).warning(
            "WORKER_METRICS_PORT needs WORKER_POOL threads or solo; no metrics served")
        return
    try:
        serving.serve(settings.worker_metrics_port, settings.metrics_address)
    except OSError as exc:
        # Another worker process on this host has the port: it answers, this one does not.
        logging.getLogger(__name__).warning(
            "WORKER_METRICS_PORT %s: %s; no metrics served by this worker",
            settings.worker_metrics_port, exc)


@signals.worker_init.connect
def _yield_cpu_to_the_receiver(**_: object) -> None:
    # Before the pool starts: its threads or processes inherit it.
    nice = app.runtime.settings.worker_nice
    if nice:
        os.nice(nice)


@signals.worker_init.connect
def _import_litellm_once(**_: object) -> None:
    # ~3 s and ~165 MB: pay it once in the parent, before any pool process or thread starts.
    from zapreply.llm import chat as llm

    llm.warm_up()
    # litellm's import is ~400,000 objects that live as long as the process: a full collection
    # walked them all (~240 ms, holding the GIL, so every slot waited). Out of its sight now.
    gc.freeze()
    logging.getLogger(__name__).info("litellm loaded and warmed up")
