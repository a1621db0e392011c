from __future__ import annotations

import gc
import logging
import os

from celery import signals

from zapreply.broker.queue import make_celery
from zapreply.settings import apply_litellm_environment, get_settings
from zapreply.storage.db import reset_engines, skip_pre_ping

apply_litellm_environment()

app = make_celery()
skip_pre_ping()
app.conf.imports = ("worker.inbound", "worker.replies")


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # Pooled connections must not be shared between a parent and its forked children.
    reset_engines()


@signals.worker_ready.connect
def _start_sweeper(**_: object) -> None:
    from zapreply.actions import privacy
    from zapreply.broker.queue import REPLY
    from zapreply.replies import sweeper

    sweeper.start(lambda conversation_id: app.send_task(REPLY, args=[conversation_id]))
    # Retention, on its own interval: a long purge must not delay the sweeps.
    privacy.start()


@signals.worker_init.connect
def _yield_cpu_to_the_receiver(**_: object) -> None:
    # Before the pool starts: its threads or processes inherit it.
    nice = get_settings().worker_nice
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
