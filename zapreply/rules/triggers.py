"""Who gets answered, and by which config: keyword triggers, a fallback config, and the
allow- and deny-lists of contacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import regex
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from zapreply.rules import configs
from zapreply.rules.configs import options_of
from zapreply.rules.options import Options
from zapreply.rules.text import compile_pattern, normalize, without_accents
from zapreply.storage.models import Conversation, Message, ReplyRun, Role, RunStatus, WorkflowConfig

OPERATORS = ("equals", "contains", "starts_with", "regex")

log = logging.getLogger(__name__)

# All the regex searches of one message together: a pattern that backtracks without end (such
# as `(a+)+$`) must cost a worker a moment, not the task's whole time limit. Python's `re`
# cannot be interrupted; the `regex` engine stops a search after its `timeout`.
REGEX_SECONDS = 0.2


def matches(text: str, options: Options) -> bool:
    """Whether a customer's text fires a config whose trigger is `keyword`."""
    operator = options.trigger_operator or "contains"
    said = normalize(text)
    if operator == "regex":
        return _regex_matches(text, said, options.trigger_keywords or [])
    for keyword in options.trigger_keywords or []:
        wanted = normalize(keyword)
        if not wanted:
            continue
        if operator == "equals" and said == wanted:
            return True
        if operator == "contains" and wanted in said:
            return True
        if operator == "starts_with" and said.startswith(wanted):
            return True
    return False


def _regex_matches(text: str, said: str, patterns: list[str]) -> bool:
    """Whether any pattern matches, within REGEX_SECONDS for them all; past it, no match."""
    deadline = time.monotonic() + REGEX_SECONDS
    for keyword in patterns:
        # Accents aside on both sides: "pedído" and "pedido" match either way.
        for pattern, subject in ((keyword, said), (keyword, text),
                                 (without_accents(keyword), said)):
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if compile_pattern(pattern).search(subject, timeout=left):
                    return True
            except TimeoutError:
                log.warning("trigger regex %r gave up after %.1f s on a %d-character message: "
                            "counted as no match", keyword, REGEX_SECONDS, len(subject))
                return False
            except regex.error:
                # Stored before patterns were checked with this engine: it never matches.
                log.warning("trigger regex %r does not compile: counted as no match", keyword)
                break
    return False


def choose_config(
    session: Session, conversation: Conversation, routed: WorkflowConfig | None, text: str,
    now: datetime, message_id: int, accepts: Callable[[WorkflowConfig], bool] | None = None,
) -> WorkflowConfig | None:
    """The config that answers this message.

    A conversation the bot is already in (a run of it within the session window) stays with its
    config, so a keyword is needed to start, not for every message. Otherwise: a `keyword`
    config the text fires, else an `all` config, else a `fallback` config; None when nothing on
    the instance wants it. With `accepts`, only the configs it accepts are considered (e.g.
    those that answer groups).
    """
    current = configs.get(session, conversation.workflow_config_id)
    if current is not None and accepts is not None and not accepts(current):
        current = None
    candidates = configs.active_on(session, routed.instance if routed else conversation.instance)
    if current is not None and current.is_active and (
        # The only config on the instance answers whatever it answers (no need to ask the
        # database whether it is engaged).
        (len(candidates) == 1 and candidates[0].id == current.id
         and options_of(current).trigger in (None, "all"))
        or _engaged(session, conversation, current, now, message_id)
    ):
        return current
    by_trigger: dict[str, list[WorkflowConfig]] = {"keyword": [], "all": [], "fallback": []}
    if accepts is not None:
        candidates = [config for config in candidates if accepts(config)]
    for config in candidates:
        by_trigger.setdefault(options_of(config).trigger or "all", []).append(config)
    for config in by_trigger["keyword"]:
        if matches(text, options_of(config)):
            return config
    if by_trigger["all"]:
        return by_trigger["all"][0]
    if by_trigger["fallback"]:
        return by_trigger["fallback"][0]
    return None


def _engaged(session: Session, conversation: Conversation, config: WorkflowConfig,
             now: datetime, message_id: int) -> bool:
    """The config is answering (or answered, within the session window) this conversation,
    or has earlier messages of a burst still waiting for it."""
    hours = options_of(config).session_idle_hours or 24
    answering = exists().where(
        ReplyRun.conversation_id == conversation.id,
        ReplyRun.workflow_config_id == config.id,
        ReplyRun.status.in_((RunStatus.RUNNING, RunStatus.SENT)),
        ReplyRun.created_at > now - timedelta(hours=hours),
    )
    waiting = exists().where(
        Message.conversation_id == conversation.id,
        Message.role == Role.CUSTOMER,
        Message.reply_run_id.is_(None),
        Message.id != message_id,
    )
    return bool(session.scalar(select(answering | waiting)))


def contact_refused(config: WorkflowConfig, conversation: Conversation,
                    also: Iterable[str] = ()) -> str | None:
    """Why the config's contact lists keep this contact out, or None. `also`: more ids of
    who wrote (a group member's JID and number, besides the group's)."""
    options = options_of(config)
    who = {normalize_contact(conversation.chat_jid)}
    if conversation.contact_phone:
        who.add(normalize_contact(conversation.contact_phone))
    who.update(normalize_contact(value) for value in also)
    if who & {normalize_contact(c) for c in options.deny_contacts or []}:
        return "contact denied"
    allowed = options.allow_contacts
    if allowed and not who & {normalize_contact(c) for c in allowed}:
        return "contact not allowed"
    return None


def normalize_contact(value: str) -> str:
    """'+55 (11) 90000-0001', '5511900000001' and '5511900000001@s.whatsapp.net' are one."""
    user = value.split("@", 1)[0].split(":", 1)[0]
    digits = "".join(c for c in user if c.isdigit())
    return digits or value.strip().lower()
