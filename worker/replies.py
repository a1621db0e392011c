"""Queue `zapreply`, reply tasks: answer a conversation under its lease."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.app import app
from zapreply.broker.queue import REPLY, SEND_BUSINESS
from zapreply.replies import business, responder
from zapreply.replies.leases import LeaseLost
from zapreply.settings import get_settings

log = logging.getLogger(__name__)


def later(conversation_id: int, seconds: float) -> None:
    """Answer the conversation in `seconds`, or sooner: no countdown outlasts half the visibility
    timeout (Redis would hand it out again early). A task woken before its time finds the
    durable wait (debounce, next_attempt_at) not over and schedules the rest."""
    countdown = min(seconds, get_settings().longest_countdown_seconds)
    reply.apply_async(args=[conversation_id], countdown=countdown)


def owner(task: Task) -> str:
    return f"{task.request.hostname}:{os.getpid()}:{threading.get_ident()}:{task.request.id}"


def answer_now_or_later(task: Task, conversation_id: int,
                        answer: Callable[[], int] | None = None) -> str:
    """Answer within this task (`answer`: how, if not `responder.answer_conversation`);
    anything that must wait becomes a later `reply` task."""
    try:
        if answer is None:
            finished = responder.answer_conversation(conversation_id, owner=owner(task))
        else:
            finished = answer()
    except (responder.Busy, responder.Waiting, responder.RetryLater) as exc:
        log.info("conversation %s: %s", conversation_id, exc)
        later(conversation_id, exc.retry_in)
        return "deferred"
    except LeaseLost as exc:
        # Another worker took over (our lease expired); it resumes the open run.
        log.warning("conversation %s: %s", conversation_id, exc)
        return "lease lost"
    return f"answered {finished}"


@app.task(name=REPLY, bind=True, max_retries=None)
def reply(self: Task, conversation_id: int) -> str:
    try:
        return answer_now_or_later(self, conversation_id)
    except (OperationalError, InterfaceError) as exc:
        settings = get_settings()
        delay = min(responder.backoff(settings, min(self.request.retries + 1, 8)),
                    settings.longest_countdown_seconds)
        log.warning("conversation %s: database error, retrying in %.1fs", conversation_id, delay)
        raise self.retry(exc=exc, countdown=delay) from exc


@app.task(name=SEND_BUSINESS, bind=True, max_retries=None)
def send_business(self: Task, message_id: int) -> str:
    attempt = self.request.retries + 1
    try:
        return business.send_business_message(message_id, attempt=attempt)
    except (business.Retry, OperationalError, InterfaceError) as exc:
        delay = min(responder.backoff(get_settings(), attempt),
                    get_settings().longest_countdown_seconds)
        log.info("business message %s: %s; again in %.1fs", message_id, exc, delay)
        raise self.retry(exc=exc, countdown=delay) from exc
