"""The console's playground, on the worker: a turn an operator typed (or a past conversation's
last customer turn) answered by a config's bot with the same prompt, history rules, tools and
model as a reply, the model's text streamed into the turn's row as it arrives.

Nothing is sent: there is no conversation, lease, outbox or delivery, the tools' effects
(send_whatsapp, handoff_to_human) are only shown, and business tools are called only when the
operator switched dry run off. Usage stays on the turn, never in the config's daily budget.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from zapreply.llm import business_tools, tools
from zapreply.replies import generate, prompt
from zapreply.rules.configs import options_of
from zapreply.rules.text import is_keyword
from zapreply.settings import Settings, get_settings
from zapreply.storage import knowledge as knowledge_store
from zapreply.storage import playground as store
from zapreply.storage.db import session_scope
from zapreply.storage.models import (
    Conversation,
    PlaygroundKind,
    PlaygroundStatus,
    PlaygroundTurn,
    WorkflowConfig,
)

log = logging.getLogger(__name__)

# How often the growing answer is written for the page to read: often enough to look live,
# seldom enough that a fast model costs a few statements a second, not one per token.
FLUSH_SECONDS = 0.1
# Whose chat it is, as the business's tools are told (no conversation exists).
PLAYGROUND_CHAT = "playground"
MAX_RESULT_CHARS = 2000


class _Stream:
    """The answer's text as it arrives, written to the turn at most every FLUSH_SECONDS."""

    def __init__(self, turn_id: int, effects: tools.Effects) -> None:
        self.turn_id = turn_id
        self.effects = effects
        self.text = ""
        self._written = ("", 0)
        self._last = 0.0

    def append(self, piece: str) -> None:
        self.text += piece
        if time.monotonic() - self._last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        state = (self.text, len(self.effects.calls))
        if state == self._written:
            return
        store.write_progress(self.turn_id, self.text, shown_calls(self.effects))
        self._written = state
        self._last = time.monotonic()


def run_turn(turn_id: int) -> str:
    """Answer a queued playground turn; what became of it."""
    from zapreply.llm.chat import LLMError  # only workers import litellm

    if not store.claim(turn_id):
        return "not queued"
    settings = get_settings()
    effects = tools.Effects(max_messages=settings.max_messages_per_run)
    stream = _Stream(turn_id, effects)
    try:
        with session_scope() as session:
            turn = session.get(PlaygroundTurn, turn_id)
            config = session.get(WorkflowConfig, turn.workflow_config_id) if turn else None
            if turn is None or config is None:
                return "gone"
            asked = _prompt(session, turn, config, settings)
            dry_run = turn.dry_run
        if asked is None:
            store.fail(turn_id, "That conversation no longer exists (erased or expired).")
            return "failed"
        draft = generate.generate(asked, settings, effects, on_text=stream.append,
                                  dry_run=dry_run)
    except LLMError as exc:
        store.fail(turn_id, f"The model call failed: {exc}", streamed=stream.text)
        return "failed"
    except Exception as exc:  # noqa: BLE001 - the page shows a reason, never a traceback
        log.exception("playground turn %s failed", turn_id)
        store.fail(turn_id, f"The playground could not answer ({type(exc).__name__}); the "
                            "worker's log has the details.", streamed=stream.text)
        return "failed"
    completions = draft.completions
    store.finish(
        turn_id, streamed=stream.text, answer="\n\n".join(draft.texts),
        tool_calls=shown_calls(effects),
        model=completions[-1].model if completions else asked.model,
        prompt_tokens=_total(c.prompt_tokens for c in completions),
        completion_tokens=_total(c.completion_tokens for c in completions),
        cost=_total(c.cost for c in completions),
    )
    return PlaygroundStatus.DONE


def _prompt(session: Session, turn: PlaygroundTurn, config: WorkflowConfig,
            settings: Settings) -> prompt.Prompt | None:
    overrides = turn.overrides or {}
    system_prompt = overrides.get("system_prompt")
    if turn.kind == PlaygroundKind.REPLAY:
        conversation = session.get(Conversation, turn.replayed_conversation_id) \
            if turn.replayed_conversation_id else None
        if conversation is None:
            return None
        # Run 0: no run's rows are special; the history is as the conversation stood.
        asked = prompt.build(session, conversation, 0, config, settings,
                             newest=turn.replayed_message_id, system_prompt=system_prompt,
                             replaying=True)
    else:
        asked = _chat_prompt(session, turn, config, settings, system_prompt)
    if overrides.get("model"):
        asked = dataclasses.replace(asked, model=overrides["model"])
    return asked


def _chat_prompt(session: Session, turn: PlaygroundTurn, config: WorkflowConfig,
                 settings: Settings, system_prompt: str | None) -> prompt.Prompt:
    """The chat's earlier turns as its history, under the config's history rules: at most
    `history_limit` messages, none from before `session_idle_hours` of silence or the
    `reset_keyword`."""
    options = options_of(config)
    said: list[tuple[Any, dict[str, Any]]] = []
    for earlier in store.chat_turns(session, turn.workflow_config_id, turn.chat,
                                    before=turn.id):
        if earlier.status != PlaygroundStatus.DONE:
            continue
        if is_keyword(earlier.customer_text, options.reset_keyword):
            said = []
            continue
        said.append((earlier.created_at, {"role": "user", "content": earlier.customer_text}))
        if earlier.answer:
            said.append((earlier.finished_at or earlier.created_at,
                         {"role": "assistant", "content": earlier.answer}))
    said.append((turn.created_at, {"role": "user", "content": turn.customer_text}))
    idle = options.session_idle_hours
    start = 0
    for index in range(1, len(said)):
        if idle and said[index][0] - said[index - 1][0] > timedelta(hours=idle):
            start = index
    limit = options.history_limit or settings.history_limit
    history = [message for _, message in said[start:]][-limit:]
    who = Conversation(instance=config.instance, chat_jid=PLAYGROUND_CHAT, contact_name=None,
                       contact_phone=None)
    knowledge = knowledge_store.has_knowledge(session, config.id)
    system = prompt.system_message(config.system_prompt if system_prompt is None
                                   else system_prompt, who, options, knowledge=knowledge)
    return prompt.Prompt(
        config.id, config.model, [system, *history] if system else history, options,
        instance=config.instance, knowledge=knowledge,
        identity=business_tools.Identity(config.instance, 0, PLAYGROUND_CHAT, None))


def shown_calls(effects: tools.Effects) -> list[dict[str, Any]]:
    """The run's tool calls as the page shows them (results cut short)."""
    shown = []
    for call in effects.calls:
        details = call.get("details") or {}
        result = str(call.get("result", ""))
        shown.append({"name": call.get("name"), "arguments": call.get("arguments"),
                      "result": result[:MAX_RESULT_CHARS],
                      "dry_run": bool(details.get("dry_run"))})
    return shown


def _total(values: Any) -> Any:
    found = [v for v in values if v is not None]
    return sum(found) if found else None
