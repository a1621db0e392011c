"""Answering a conversation.

A run answers every customer message that has no answer yet (a burst), under the conversation's
lease. Its life:

1. plan (`zapreply.replies.plan`): the unanswered messages are bound to a new `reply_runs` row
   (or to one that a previous attempt left `running`, which is resumed instead);
2. generate (`zapreply.replies.generate`): history and prompt (`zapreply.replies.prompt`) ▸
   LLM ▸ tools ▸ LLM … with no database transaction open; nothing the model says leaves the
   process yet;
3. store (`zapreply.replies.outbox`): the texts to send become outbox rows (assistant
   messages, `pending`, each with a deterministic WhatsApp message id), together with the LLM
   and tool events, in one transaction;
4. deliver (`zapreply.replies.deliver`): pending rows are sent in order and marked `sent`.

A failed attempt is retried after a backoff or closes its run (`zapreply.replies.failures`).
A retried or redelivered task resumes at the first step not done: a run with outbox rows never
calls the LLM again, and a row marked sent is never sent again. A row whose send outcome is
unknown (the worker died mid-request) is re-sent with the same message id, which WhatsApp treats
as the same message. Messages that arrive while a run is generating are answered by the next run
of the same holder, in order, rather than folded in: the reply being sent was written for what
the customer had said when it was asked for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from zapreply.replies import deliver, generate, inbound, leases, plan
from zapreply.replies.failures import RetryLater, backoff
from zapreply.replies.outbox import outbound_message_id
from zapreply.replies.prompt import render_prompt
from zapreply.replies.steps import Deliver, Done, Generate, Next, RunContext, Wait
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation

__all__ = [
    "Busy", "RetryLater", "Started", "Waiting", "answer_conversation", "answer_started",
    "backoff", "outbound_message_id", "record_and_start", "render_prompt", "start",
]


class Busy(Exception):
    """Another worker is answering this conversation; try again shortly."""

    def __init__(self, retry_in: float):
        super().__init__(f"conversation busy, retry in {retry_in:.1f}s")
        self.retry_in = retry_in


class Waiting(Exception):
    """The burst is still arriving; answer after `retry_in` seconds."""

    def __init__(self, retry_in: float):
        super().__init__(f"debouncing, retry in {retry_in:.1f}s")
        self.retry_in = retry_in


@dataclass(frozen=True)
class Started:
    """A conversation claimed and its first step planned, in a transaction not yet committed
    (`run` None: the conversation was erased, nothing to answer)."""

    run: RunContext | None
    first: Next


def start(session: Session, conversation_id: int, *, owner: str) -> Started | None:
    """Claim the conversation's lease and plan its first step in the caller's transaction;
    None if another worker holds the lease. Carry on with `answer_started` once the
    transaction has committed."""
    settings = get_settings()
    claimed = leases.claim_and_load(session, conversation_id, owner, settings.lease_seconds)
    if claimed is None:
        if session.get(Conversation, conversation_id) is None:
            # Erased (zapreply.actions.privacy): nothing left to answer, and no lease anyone could
            # ever take, so not "busy" (that would be retried forever).
            return Started(None, Next(Done()))
        return None
    run = RunContext(conversation_id, claimed.lease_token, settings)
    return Started(run, plan.plan(session, run, claimed))


def record_and_start(
    *, config_id: int, instance: str, message: dict[str, Any], owner: str
) -> tuple[inbound.Recorded, Started | None]:
    """Record an inbound message and, when it is to be answered at once, claim and plan its
    conversation in the same transaction: one commit fewer for the common case.

    If planning fails, the message goes with the rolled-back transaction: it is recorded again
    on its own before the error propagates, so a message is never lost with a plan. (A
    database error propagates as it is: the task retries it whole, and recording is
    idempotent.)"""
    planning = False
    try:
        with session_scope() as session:
            recorded = inbound.record_inbound(
                session, config_id=config_id, instance=instance, message=message)
            if not recorded.needs_reply or recorded.debounce_seconds > 0:
                return recorded, None
            planning = True
            return recorded, start(session, recorded.conversation_id, owner=owner)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        if planning:
            with session_scope() as session:
                inbound.record_inbound(
                    session, config_id=config_id, instance=instance, message=message)
        raise


def answer_conversation(conversation_id: int, *, owner: str) -> int:
    """Answer whatever is unanswered in the conversation; return how many runs were finished.

    Each transaction does one step and decides the next, so the common case (one burst, one
    reply) is three short transactions around the LLM call and the send.
    """
    with session_scope() as session:
        started = start(session, conversation_id, owner=owner)
    return answer_started(started)


def answer_started(started: Started | None) -> int:
    """Go on from `start`, whose transaction has committed; how many runs were finished."""
    if started is None:
        raise Busy(retry_in=random.uniform(0.5, 1.5))
    run, following = started.run, started.first
    if run is None or not isinstance(following.step, Generate | Deliver):
        return _outcome(following)
    leases.keeper.hold(run.conversation_id, run.token)
    released = False
    try:
        following = _steps_until_done(run, following)
        released = True
        return _outcome(following)
    finally:
        leases.keeper.drop(run.conversation_id, run.token)
        if not released:
            with session_scope() as session:
                leases.release_conversation(session, run.conversation_id, run.token)


def _steps_until_done(run: RunContext, following: Next) -> Next:
    """Do each step the planner gives until it gives none (`Wait` or `Done`: the lease is
    given up by then); the runs finished are counted on the way."""
    finished = following.finished
    step = following.step
    while isinstance(step, Generate | Deliver):
        if isinstance(step, Generate):
            following = generate.generate_and_store(run, step)
        else:
            following = deliver.deliver(run, step)
        finished += following.finished
        step = following.step
    return Next(step, finished)


def _outcome(last: Next) -> int:
    if isinstance(last.step, Wait):
        raise Waiting(retry_in=last.step.seconds)
    return last.finished
