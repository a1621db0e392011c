"""Daily LLM budgets per config: options `daily_token_budget` (prompt + completion tokens) and
`daily_cost_budget` (USD, as litellm prices the model; a model it has no price for never
spends a cost budget), over a day in the config's `timezone`.

What a config spent is one `daily_usage` row per day, added to in the transaction that stores
each reply (and each voice-note transcription, in cost) and read by primary key before a new
reply is generated: nothing is kept, and
nothing is checked, for configs without a budget.

The check happens before the LLM is called, and usage is added after: replies that were already
being generated when the budget ran out still finish, so a day may end slightly over budget (by
at most what the replies in flight at that moment spend). Tokens of a generation that failed
midway (the LLM went down between tool rounds) are not counted.

Once spent, new customer messages get no LLM call: `budget_action` "fallback" sends
`fallback_text` (if set), "handoff" pauses the conversation for a person as `handoff_to_human`
does (sending `handoff_text`, if set). Each such burst is recorded as `message.ignored` (reason
"daily budget spent"); the first one of the day, per config, also writes `budget.exceeded`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from zapreply.rules import conversations
from zapreply.rules.options import Options
from zapreply.storage import daily_usage, events
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, ReplyRun

SPENT = "daily budget spent"


def has_budget(options: Options) -> bool:
    return options.daily_token_budget is not None \
        or options.daily_cost_budget is not None


def day_of(now: datetime, options: Options) -> date:
    try:
        zone = ZoneInfo(options.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return now.astimezone(zone).date()


def is_spent(session: Session, config_id: int, options: Options, now: datetime) -> bool:
    if not has_budget(options):
        return False
    spent = daily_usage.spent(session, config_id, day_of(now, options))
    token_budget, cost_budget = options.daily_token_budget, options.daily_cost_budget
    return (token_budget is not None and spent.tokens >= token_budget) or \
        (cost_budget is not None and spent.cost >= cost_budget)


def record_usage(session: Session, config_id: int, options: Options,
                 completions: list[Any], now: datetime) -> None:
    """Add what a reply's LLM calls spent to the config's day (only if it has a budget)."""
    if not has_budget(options):
        return
    tokens = sum((c.prompt_tokens or 0) + (c.completion_tokens or 0) for c in completions)
    cost = sum(c.cost or 0.0 for c in completions)
    if tokens or cost:
        daily_usage.add(session, config_id, day_of(now, options), tokens, cost)


def record_transcription(session: Session, config_id: int | None, options: Options,
                         cost: float | None, now: datetime) -> None:
    """Add what a voice note's transcription cost to the config's day (only if it has a
    budget): it is paid to an LLM provider like a completion."""
    if config_id is not None and cost and has_budget(options):
        daily_usage.add(session, config_id, day_of(now, options), 0, cost)


def turn_away(session: Session, conversation: Conversation, run: ReplyRun,
              options: Options, now: datetime) -> list[str]:
    """The budget is spent: act on `budget_action`; return the texts to send (maybe none)."""
    day = day_of(now, options)
    first_today = daily_usage.mark_exceeded(session, run.workflow_config_id, day, now)
    action = options.budget_action or "fallback"
    if first_today is not None:
        events.record(
            session, EventType.BUDGET_EXCEEDED, conversation_id=conversation.id, run_id=run.id,
            workflow_config_id=run.workflow_config_id, day=day.isoformat(),
            tokens=first_today.tokens, cost=first_today.cost,
            daily_token_budget=options.daily_token_budget,
            daily_cost_budget=options.daily_cost_budget, action=action,
        )
    if action == "handoff":
        conversations.pause(session, conversation, reason="handoff to human", until=None,
                            actor="budget")
        events.record(session, EventType.HANDOFF_REQUESTED, conversation_id=conversation.id,
                      run_id=run.id, reason=SPENT)
        text = options.handoff_text
    else:
        text = options.fallback_text
    return [text] if text else []
