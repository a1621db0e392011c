"""Re-running a failed reply run, once whatever failed (LLM, messages API) is back."""

from __future__ import annotations

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session

from zapreply.actions.errors import Conflict, NotFound
from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import Message, OutboxStatus, ReplyRun, Role, RunStatus


class CannotReplay(Conflict):
    """The run exists but has not failed: there is nothing to answer again."""


def reopen_run(session: Session, run_id: int, *, actor: str) -> ReplyRun:
    """Put a failed run back to `running`, so the next reply task for its conversation
    answers the same customer messages again. Rows not delivered are dropped (an away
    message is sent again instead); a fallback text that went out stays in the history."""
    run = session.get(ReplyRun, run_id, with_for_update=True)
    if run is None:
        raise NotFound(f"no run {run_id}")
    if run.status != RunStatus.FAILED:
        raise CannotReplay(f"run {run_id} is {run.status}; only failed runs can be replayed")
    unsent = and_(Message.reply_run_id == run_id, Message.role.in_((Role.ASSISTANT, Role.TOOL)),
                  Message.status.is_distinct_from(OutboxStatus.SENT))
    if session.scalar(select(exists().where(unsent, Message.extra["away"].as_boolean()))):
        # Outside opening hours the answer is the away message, never the model's: send it
        # again (the same message, under the same id).
        session.execute(update(Message).where(unsent).values(status=OutboxStatus.PENDING))
    else:
        session.execute(delete(Message).where(unsent))
    previous_error = run.error
    run.status = RunStatus.RUNNING
    run.attempts = 0
    run.error = None
    run.next_attempt_at = None
    run.finished_at = None
    events.record(session, EventType.RUN_REPLAYED, conversation_id=run.conversation_id,
                  run_id=run.id, actor=actor, previous_error=previous_error)
    return run
