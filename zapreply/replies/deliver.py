"""Sending a run's pending outbox rows in order, each marked sent once it went out, each in its
turn by the instance's pace (`zapreply.replies.pacing`).

A send that happened is recorded whatever became of the lease meanwhile. The row's WhatsApp id
is deterministic, so a row re-sent after a crash (its outcome unknown) is the same message.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy.orm import Session

from zapreply.channel import messaging
from zapreply.metrics import series, serving
from zapreply.replies import failures, leases, pacing, plan
from zapreply.replies.steps import Deliver, Done, Next, Outgoing, RunContext
from zapreply.storage import dashboard, events, runs
from zapreply.storage import outbox as store
from zapreply.storage.db import autocommit, get_engine, session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import ReplyRun, utcnow


def deliver(run: RunContext, step: Deliver) -> Next:
    """Do `step`; what comes next once its last row went out."""
    typing = bool(step.options.typing_indicator)
    try:
        return _send_rows(run, step, typing)
    except BaseException:
        # A delivered message clears "typing…" in WhatsApp by itself; a failed one does not.
        if typing:
            messaging.set_typing(step.target.send, to=step.target.to, typing=False,
                                 timeout=run.settings.send_timeout_seconds)
        raise


def _send_rows(run: RunContext, step: Deliver, typing: bool) -> Next:
    per_char = float(step.options.typing_ms_per_char or 0) / 1000
    cap = float(step.options.typing_max_seconds or 0)
    timeout = run.settings.send_timeout_seconds
    for index, row in enumerate(step.rows):
        paced = _reserve(run, step)
        if paced is not None:
            if typing:
                messaging.set_typing(step.target.send, to=step.target.to, typing=False,
                                     timeout=timeout)
            return _wait_turn(run, step.run_id, row, paced)
        if per_char and cap:
            # As if someone typed it: "typing…" for a time that grows with the text.
            if typing:
                messaging.set_typing(step.target.send, to=step.target.to, typing=True,
                                     timeout=timeout)
            time.sleep(min(len(row.text) * per_char, cap))
        try:
            provider_id = messaging.send_text(step.target.send, to=step.target.to,
                                              text=row.text, message_id=row.message_id,
                                              timeout=timeout)
        except messaging.SendError as exc:
            return failures.send_failed(run, step.run_id, failures.Failure(
                EventType.MESSAGE_FAILED, exc, permanent=exc.permanent,
                attempts=run.settings.send_max_attempts, row_id=row.row_id, status=exc.status))
        if index == len(step.rows) - 1:
            following = _last_sent(run, step.run_id, row, provider_id)
            _count_reply_time(step.run_id)
            return following
        with session_scope() as session:
            # The send happened: record it whatever became of the lease meanwhile.
            _record_sent(session, run, step.run_id, row, provider_id)
            still_ours = leases.renew(session, run.conversation_id, run.token,
                                      run.settings.lease_seconds)
        if not still_ours:
            raise run.lease_lost("lease lost after a send")
    raise AssertionError("a Deliver step has rows")  # pragma: no cover


def _count_reply_time(run_id: int) -> None:
    """The run's reply time into the latency histogram, when this process serves its figures
    (an indexed read of the run's messages: no cost to a worker nobody scrapes)."""
    if not serving.enabled:
        return
    with autocommit() as connection:
        seconds = dashboard.reply_seconds(connection, run_id)
    if seconds is not None:
        series.reply_sent(seconds)

def _reserve(run: RunContext, step: Deliver) -> pacing.Paced | None:
    if not step.instance or not pacing.is_paced(step.options):
        return None
    with autocommit() as connection:
        return pacing.reserve(connection, instance=step.instance,
                              conversation_id=run.conversation_id, options=step.options,
                              now=utcnow())


def _wait_turn(run: RunContext, run_id: int, row: Outgoing, paced: pacing.Paced) -> Next:
    """The row must wait: the run's rows stay pending until then, the lease is given up, and
    the planner says when to look again."""
    with session_scope() as session:
        leases.fence(session, run.conversation_id, run.token, run.settings.lease_seconds)
        session.get(ReplyRun, run_id).next_attempt_at = \
            utcnow() + timedelta(seconds=paced.seconds)
        events.record(session, EventType.MESSAGE_PACED, conversation_id=run.conversation_id,
                      run_id=run_id, message_id=row.row_id,
                      delay_seconds=round(paced.seconds, 3), reason=str(paced.reason))
        return plan.plan(session, run)


def _record_sent(session: Session, run: RunContext, run_id: int, row: Outgoing,
                 provider_id: str | None) -> None:
    store.mark_sent(session.connection(), row.row_id, provider_id, utcnow())
    events.record(session, EventType.MESSAGE_SENT, conversation_id=run.conversation_id,
                  run_id=run_id, message_id=row.row_id, provider_message_id=provider_id)


def _last_sent(run: RunContext, run_id: int, row: Outgoing, provider_id: str | None) -> Next:
    """The run's last row went out: record it, close the run, and stop here unless more came
    in meanwhile. On PostgreSQL, all in one statement (`record_last_send_postgresql`) run in
    autocommit; a transaction follows only when more is waiting, to renew the lease and plan."""
    if get_engine().dialect.name != "postgresql":
        with session_scope() as session:
            _record_sent(session, run, run_id, row, provider_id)
            return _close_sent_run(session, run, run_id)
    with autocommit() as connection:
        outcome = store.record_last_send_postgresql(
            connection, conversation_id=run.conversation_id, token=run.token, run_id=run_id,
            row_id=row.row_id, provider_id=provider_id, sent_at=utcnow())
    closed = int(outcome.closed)
    if outcome.closed and not outcome.more:
        return Next(Done(), closed)  # released, if the lease was still ours
    with session_scope() as session:
        if not leases.renew(session, run.conversation_id, run.token, run.settings.lease_seconds):
            raise run.lease_lost("lease lost after a send")
        return plan.plan(session, run).after(closed)


def _close_sent_run(session: Session, run: RunContext, run_id: int) -> Next:
    """Every row of the run went out: close it, and stop here unless more came in meanwhile
    (the portable reference of `record_last_send_postgresql`, after `_record_sent`)."""
    connection = session.connection()
    closed = connection.execute(
        runs.CLOSE_SENT_RUN, {"run_id": run_id, "finished_at": utcnow()}).rowcount
    more = connection.execute(runs.MORE_WAITING, {"conversation_id": run.conversation_id}).scalar()
    if more or not closed:
        if not leases.renew(session, run.conversation_id, run.token, run.settings.lease_seconds):
            raise run.lease_lost("lease lost after a send")
        return plan.plan(session, run).after(closed)
    # Released only if still ours; if not, whoever holds it now finds nothing left to do.
    leases.release_conversation(session, run.conversation_id, run.token)
    return Next(Done(), closed)
