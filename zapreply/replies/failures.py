"""What a failed attempt does to its run: retry after a backoff while the attempts last and a
retry can help; otherwise close the run (failed, with the config's fallback text if it has one)
and go on with whatever else waits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from zapreply.llm import business_tools, tools
from zapreply.metrics import series
from zapreply.replies import leases, media, outbox, plan
from zapreply.replies.steps import Next, RunContext
from zapreply.rules.options import Options
from zapreply.settings import Settings
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Message, OutboxStatus, ReplyRun, RunStatus, utcnow


class RetryLater(Exception):
    """A failure a retry can fix (LLM or messages API); the run stays open."""

    def __init__(self, reason: str, retry_in: float):
        super().__init__(f"{reason}; retry in {retry_in:.1f}s")
        self.retry_in = retry_in


def backoff(settings: Settings, attempt: int, at_least: float | None = None) -> float:
    """Exponential backoff with jitter around the nominal delay; at least `at_least` (a
    provider's Retry-After), but never more than RETRY_MAX_SECONDS for it: a customer waits."""
    nominal = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    delay = nominal * random.uniform(0.5, 1.5)
    return max(delay, min(at_least or 0.0, settings.retry_max_seconds))


@dataclass(frozen=True)
class Failure:
    """One failed attempt at a run's step."""

    event_type: EventType  # LLM_FAILED or MESSAGE_FAILED
    error: Exception
    permanent: bool
    attempts: int  # how many attempts the run gets for this step
    retry_after: float | None = None
    row_id: int | None = None  # the outbox row whose send failed
    status: int | None = None  # the messages API's HTTP status


def generation_failed(run: RunContext, run_id: int, failure: Failure,
                      options: Options) -> Next:
    """The model could not be asked: retry, or close the run with the fallback text (from the
    run's `options`) and plan what comes next."""
    with session_scope() as session:
        reply_run, gives_up = _count_attempt(session, run, run_id, failure)
        if gives_up:
            outbox.close_failed(session, reply_run, run.conversation_id, str(failure.error),
                                options, kind=series.LLM)
            session.flush()
            return plan.plan(session, run)
        delay = _retry_at(reply_run, run.settings, failure.retry_after)
    raise RetryLater(str(failure.error), delay)


def send_failed(run: RunContext, run_id: int, failure: Failure) -> Next:
    """A row could not be sent: retry, or fail it with every row of its run still pending (a
    fallback would go the same way) and plan what comes next."""
    with session_scope() as session:
        reply_run, gives_up = _count_attempt(session, run, run_id, failure)
        if gives_up:
            session.execute(
                update(Message)
                .where(Message.reply_run_id == run_id, Message.status == OutboxStatus.PENDING)
                .values(status=OutboxStatus.FAILED)
            )
            if reply_run.status == RunStatus.RUNNING:
                reply_run.status = RunStatus.FAILED
                reply_run.error = str(failure.error)
                reply_run.finished_at = utcnow()
                events.record(session, EventType.RUN_FAILED, conversation_id=run.conversation_id,
                              run_id=run_id, reason=str(failure.error),
                              attempts=reply_run.attempts)
                outbox.count_failure_on_commit(session, series.SEND)
            session.flush()
            return plan.plan(session, run)
        delay = _retry_at(reply_run, run.settings, failure.retry_after)
    raise RetryLater(str(failure.error), delay)


def media_failed(run: RunContext, run_id: int, exc: media.MediaFailed) -> Next:
    """A message's media could not be fetched or transcribed: retry after a backoff, or, once
    its attempts are spent, answer the burst with that message described as not understood."""
    with session_scope() as session:
        leases.fence(session, run.conversation_id, run.token, run.settings.lease_seconds)
        attempt = media.record_failure(session, exc, conversation_id=run.conversation_id,
                                       run_id=run_id, budget=run.settings.llm_max_attempts)
        if attempt is None:
            session.flush()
            return plan.plan(session, run)
        delay = backoff(run.settings, attempt, exc.retry_after)
        session.get(ReplyRun, run_id).next_attempt_at = utcnow() + timedelta(seconds=delay)
    raise RetryLater(str(exc), delay)


def record_discarded_calls(run: RunContext, run_id: int, effects: tools.Effects) -> None:
    """Business tools called by a generation that then failed did reach their endpoints: the
    events say so (`discarded`), though the draft they served is dropped and retried."""
    calls = [call for call in effects.calls if "details" in call]
    if not calls:
        return
    with session_scope() as session:
        leases.fence(session, run.conversation_id, run.token, run.settings.lease_seconds)
        for call in calls:
            events.record(session, EventType.TOOL_CALLED, conversation_id=run.conversation_id,
                          run_id=run_id, name=call["name"], arguments=call["arguments"],
                          result=call["result"][:business_tools.EVENT_RESULT_CHARS],
                          discarded=True, **call["details"])


def _count_attempt(session: Session, run: RunContext, run_id: int,
                   failure: Failure) -> tuple[ReplyRun, bool]:
    """Record the attempt (under the fence); the run, and whether it gives up."""
    leases.fence(session, run.conversation_id, run.token, run.settings.lease_seconds)
    reply_run = session.get(ReplyRun, run_id)
    reply_run.attempts += 1
    gives_up = failure.permanent or reply_run.attempts >= failure.attempts
    details: dict[str, Any] = (
        {"message_id": failure.row_id, "status": failure.status} if failure.row_id else {})
    events.record(session, failure.event_type, conversation_id=run.conversation_id,
                  run_id=run_id, error=str(failure.error), permanent=failure.permanent,
                  attempt=reply_run.attempts, will_retry=not gives_up, **details)
    return reply_run, gives_up


def _retry_at(reply_run: ReplyRun, settings: Settings, retry_after: float | None) -> float:
    """Keep the run open until after a backoff; the delay."""
    delay = backoff(settings, reply_run.attempts, retry_after)
    reply_run.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return delay
