"""Asking the model for a run's reply: the burst's media resolved, the model and its tools
called in rounds within the run's deadline, and the draft stored in the outbox.

No database transaction is open while the model works; nothing it says leaves the process
until `zapreply.replies.deliver` sends the stored rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zapreply.channel import messaging
from zapreply.llm import business_tools, tools
from zapreply.metrics import series
from zapreply.replies import failures, knowledge, media, outbox, plan
from zapreply.replies.prompt import Prompt
from zapreply.replies.steps import Deliver, Draft, Generate, Next, RunContext
from zapreply.rules import budget, notes
from zapreply.settings import Settings
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import utcnow


def generate_and_store(run: RunContext, step: Generate) -> Next:
    """Do `step`: the reply written and stored, then what comes next (usually its delivery)."""
    from zapreply.llm.chat import LLMError  # only workers import litellm

    options = step.prompt.options
    if options.mark_read:
        messaging.mark_read(step.target.send, chat=step.chat, messages=step.read_ids,
                            timeout=run.settings.send_timeout_seconds)
    _typing(run, step, True)
    effects = tools.Effects(max_messages=run.settings.max_messages_per_run)
    # Media work and business tools share one deadline: what the task time limit leaves after
    # the LLM calls.
    deadline = time.monotonic() + business_tools.time_budget(run.settings)
    try:
        instead = media.resolve(step.prompt.messages, step.prompt.burst, options=options,
                                send=step.target.send, settings=run.settings,
                                conversation_id=run.conversation_id, run_id=step.run_id,
                                deadline=deadline)
    except media.MediaFailed as exc:
        _typing(run, step, False)
        return failures.media_failed(run, step.run_id, exc)
    try:
        # Nothing in the burst the model could understand: the config's media fallback text.
        draft = Draft([instead], effects) if instead is not None \
            else generate(step.prompt, run.settings, effects, deadline)
    except LLMError as exc:
        failures.record_discarded_calls(run, step.run_id, effects)
        _typing(run, step, False)
        return failures.generation_failed(run, step.run_id, failures.Failure(
            EventType.LLM_FAILED, exc, permanent=exc.permanent, retry_after=exc.retry_after,
            attempts=run.settings.llm_max_attempts), options)
    following = _store(run, step, draft)
    if not isinstance(following.step, Deliver):
        # Nothing to send (a handoff without handoff_text): "typing…" must not linger.
        _typing(run, step, False)
    return following


def _store(run: RunContext, step: Generate, draft: Draft) -> Next:
    rows = outbox.store_plain_reply(run, step, draft)
    if rows is not None:
        return Next(Deliver(step.run_id, step.target, rows, step.prompt.options,
                                step.prompt.instance))
    with session_scope() as session:
        written = outbox.fence_and_record_llm_events(session, run, step.run_id, draft)
        rows = outbox.store_draft(session, run, step, draft, llm_events_written=written)
        budget.record_usage(session, step.prompt.config_id, step.prompt.options,
                            draft.completions, utcnow())
        if rows:
            return Next(Deliver(step.run_id, step.target, rows, step.prompt.options,
                                step.prompt.instance))
        return plan.plan(session, run)


def _typing(run: RunContext, step: Generate, typing: bool) -> None:
    if step.prompt.options.typing_indicator:
        messaging.set_typing(step.target.send, to=step.target.to, typing=typing,
                             timeout=run.settings.send_timeout_seconds)


def generate(prompt: Prompt, settings: Settings, effects: tools.Effects | None = None,
             deadline: float | None = None, *, on_text: Callable[[str], None] | None = None,
             dry_run: bool = False) -> Draft:
    """The model asked, with the built-in and the business's tools, for up to
    MAX_TOOL_ROUNDS rounds of tool calls. `on_text`: the answer's text streamed to it as the
    model writes it (the console's playground); `dry_run`: business tools never called."""
    from zapreply.llm import chat as llm

    messages = list(prompt.messages)
    effects = effects if effects is not None else tools.Effects(
        max_messages=settings.max_messages_per_run)
    if deadline is None:
        deadline = time.monotonic() + business_tools.time_budget(settings)
    toolbox = business_tools.DryRun if dry_run else business_tools.Toolbox
    business = toolbox(
        prompt.options.tools, budget_seconds=deadline - time.monotonic(),
        identity=prompt.identity, private_hosts=prompt.options.tool_private_hosts)
    search = knowledge.Search(prompt.config_id, prompt.options, settings, deadline) \
        if prompt.knowledge else None
    options = prompt.options
    memory = notes.remembering(
        prompt.notes, options.contact_notes_max_chars or notes.MAX_NOTES_CHARS) \
        if prompt.memory else None
    schemas = tools.SCHEMAS + ([tools.KNOWLEDGE_SCHEMA] if search else []) \
        + ([tools.REMEMBER_SCHEMA] if memory else []) + business.schemas
    completions = []
    final = ""
    for _round in range(settings.max_tool_rounds + 1):
        if on_text is None:
            completion = llm.complete(
                model=prompt.model,
                messages=messages,
                tools=schemas,
                timeout=settings.llm_timeout_seconds,
                temperature=prompt.options.temperature,
                max_tokens=prompt.options.max_tokens,
            )
        else:
            completion = llm.stream(
                model=prompt.model,
                messages=messages,
                tools=schemas,
                timeout=settings.llm_timeout_seconds,
                on_text=on_text,
                temperature=prompt.options.temperature,
                max_tokens=prompt.options.max_tokens,
            )
        completions.append(completion)
        series.llm_call(prompt.model, completion.latency_ms / 1000, completion.prompt_tokens,
                        completion.completion_tokens)
        final = completion.content
        if not completion.tool_calls:
            break
        messages.append(completion.as_message())
        for call in completion.tool_calls:
            result = tools.execute(call.name, call.arguments, effects, business, search,
                                   memory)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    # When the model used send_whatsapp, those messages are the reply; its closing text is
    # commentary for us ("I sent it"), not for the customer.
    if effects.messages:
        texts = list(effects.messages)
    else:
        texts = [final.strip()] if final.strip() else []
    return Draft(texts=texts, effects=effects, completions=completions)
