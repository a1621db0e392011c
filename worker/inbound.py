"""Queue `zapreply`, inbound tasks: record what WuzAPI delivered."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.app import app
from worker.replies import answer_now_or_later, later, owner
from zapreply.broker.queue import HANDLE_INBOUND, RECORD_IGNORED
from zapreply.replies import inbound, responder
from zapreply.settings import MIN_VISIBILITY_TIMEOUT_SECONDS
from zapreply.storage.db import session_scope

# The database being unreachable must not lose an acknowledged message: keep retrying, backing
# off to 8 s (a retry is a countdown, and countdowns stay within half the visibility timeout:
# settings.MIN_VISIBILITY_TIMEOUT_SECONDS). Other database errors are bugs, not outages:
# retrying would only repeat them.
_DB_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": MIN_VISIBILITY_TIMEOUT_SECONDS // 2,
    "retry_jitter": True,
    "max_retries": None,
}


@app.task(name=HANDLE_INBOUND, bind=True, **_DB_RETRY)
def handle_inbound(self: Task, config_id: int, instance: str, message: dict[str, Any]) -> str:
    recorded, started = responder.record_and_start(
        config_id=config_id, instance=instance, message=message, owner=owner(self))
    if not recorded.needs_reply:
        return "recorded" if recorded.is_new else "duplicate"
    if recorded.debounce_seconds > 0:
        later(recorded.conversation_id, recorded.debounce_seconds)
        return "scheduled"
    return answer_now_or_later(self, recorded.conversation_id,
                               lambda: responder.answer_started(started))


@app.task(name=RECORD_IGNORED, **_DB_RETRY)
def record_ignored(instance: str, reason: str, wa_message_id: str | None = None,
                   chat_jid: str | None = None, details: dict[str, Any] | None = None) -> None:
    with session_scope() as session:
        inbound.record_ignored(session, instance=instance, reason=reason,
                               wa_message_id=wa_message_id, chat_jid=chat_jid,
                               details=details)
