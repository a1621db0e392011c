"""Reply runs that need an operator: failed ones, and ones waiting to try again, across every
conversation; newest first, keyset-paged on the run id (index ix_reply_runs_status_id)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from zapreply.actions.errors import ActionError, Invalid
from zapreply.actions.paging import Page, page
from zapreply.actions.replay import reopen_run
from zapreply.storage.models import Conversation, ReplyRun, RunStatus

MAX_REPLAY_AT_ONCE = 100


def list_troubled_runs(session: Session, *, retrying: bool | None = None, limit: int = 50,
                       before_id: int | None = None) -> Page:
    """Failed runs, and running ones that failed an attempt and wait to retry (`retrying`
    True: only those, False: only failed ones, None: both). Rows: (run, conversation)."""
    waiting = (ReplyRun.status == RunStatus.RUNNING) & (ReplyRun.attempts > 0)
    failed = ReplyRun.status == RunStatus.FAILED
    clause = waiting if retrying else failed if retrying is False else or_(failed, waiting)
    statement = select(ReplyRun).where(clause)
    found = page(session, statement, ReplyRun.id, limit=limit, before_id=before_id)
    ids = {run.conversation_id for run in found.rows}
    by_id = {c.id: c for c in session.scalars(
        select(Conversation).where(Conversation.id.in_(ids)))} if ids else {}
    return Page([(run, by_id.get(run.conversation_id)) for run in found.rows], found.has_more,
                forward=False, next_id=found.next_id)


@dataclass(frozen=True)
class Replayed:
    conversation_ids: list[int]
    refused: dict[int, str]


def replay_runs(session: Session, run_ids: list[int], *, actor: str) -> Replayed:
    """Reopen each failed run; the ones that cannot be are reported, not fatal. The caller
    publishes a reply task per conversation once this commits."""
    if not run_ids:
        raise Invalid("choose at least one run")
    if len(run_ids) > MAX_REPLAY_AT_ONCE:
        raise Invalid(f"at most {MAX_REPLAY_AT_ONCE} runs at once")
    conversation_ids: list[int] = []
    refused: dict[int, str] = {}
    for run_id in sorted(set(run_ids)):
        try:
            with session.begin_nested():
                run = reopen_run(session, run_id, actor=actor)
        except ActionError as exc:
            refused[run_id] = exc.message
            continue
        if run.conversation_id not in conversation_ids:
            conversation_ids.append(run.conversation_id)
    return Replayed(conversation_ids, refused)
