"""What a run carries from one step to the next: typed values, no I/O.

A run is one conversation answered under one lease (`RunContext`). The planner
(`zapreply.replies.plan`) decides each `Step`; the driver (`zapreply.replies.responder`) does it
and gets back the `Next` step, with the number of reply runs finished on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zapreply.llm import tools
from zapreply.replies import leases
from zapreply.replies.prompt import Prompt
from zapreply.rules.options import Options
from zapreply.settings import Settings


@dataclass(frozen=True)
class RunContext:
    """One conversation answered under one lease: what every step needs to write."""

    conversation_id: int
    token: int
    settings: Settings

    def lease_lost(self, why: str) -> leases.LeaseLost:
        return leases.LeaseLost(f"conversation {self.conversation_id}: {why}")


@dataclass(frozen=True)
class Target:
    """Where a run's replies go: the config's `send` settings and the recipient."""

    send: dict[str, Any]
    to: str


@dataclass(frozen=True)
class Outgoing:
    """An outbox row to deliver."""

    row_id: int
    text: str
    message_id: str


@dataclass(frozen=True)
class Generate:
    """Ask the model (with tools) for the reply of run `run_id`, and store it."""

    run_id: int
    prompt: Prompt
    target: Target
    chat: str = ""
    # (WhatsApp id, sender JID) of the customer messages this run answers (to mark them read).
    read_ids: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Deliver:
    """Send the run's pending outbox rows, in order."""

    run_id: int
    target: Target
    rows: list[Outgoing]
    options: Options = field(default_factory=Options)
    # The WhatsApp instance sending them (its pace: zapreply.replies.pacing).
    instance: str = ""


@dataclass(frozen=True)
class Wait:
    """Nothing to do for `seconds` (a burst still arriving, a backoff); the lease is given up."""

    seconds: float


@dataclass(frozen=True)
class Done:
    """Nothing left to answer; the lease is given up."""


Step = Generate | Deliver | Wait | Done


@dataclass(frozen=True)
class Next:
    """The step that follows, and how many reply runs were finished getting there."""

    step: Step
    finished: int = 0

    def after(self, finished: int) -> Next:
        """This, preceded by `finished` runs finished before it."""
        return Next(self.step, self.finished + finished)


@dataclass(frozen=True)
class Draft:
    """What one generation produced: the texts to send, the tools' effects, the completions."""

    texts: list[str]
    effects: tools.Effects
    completions: list[Any] = field(default_factory=list)
