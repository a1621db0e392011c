"""Workflow configs: validation, masking and lookup. Shared by the admin API, the CLI, the
receiver and the workers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.net.http import origin
from zapreply.settings import get_settings
from zapreply.storage.models import WorkflowConfig, new_webhook_secret

DRIVERS = ("wuzapi", "livchat")
MASK = "********"

# Optional knobs stored in WorkflowConfig.options, with their defaults and types.
OPTION_DEFAULTS: dict[str, Any] = {
    "temperature": None,
    "max_tokens": None,
    "history_limit": None,
    # Sent instead of a raw error when a reply cannot be produced; None sends nothing.
    "fallback_text": None,
    # Sent when the model hands the conversation to a human; None sends nothing.
    "handoff_text": None,
    # How long a message typed by the business on its phone pauses the bot.
    "human_pause_minutes": 30.0,
    # Typed by the business on its phone: the bot takes the conversation back at once.
    "resume_keyword": None,
    # Typed by the customer: the conversation starts a fresh context.
    "reset_keyword": None,
    # After this long without messages, the model no longer sees the earlier ones.
    "session_idle_hours": 24.0,
    # Longer customer messages are cut to this many characters before reaching the model.
    "max_input_chars": 5000,
    # More customer messages than this in a minute are recorded but not answered.
    "rate_limit_per_minute": 30,
    # Conversations the instance opens in a minute past this are recorded but not answered
    # (a flood of strangers must not buy a model call each); None: no limit.
    "new_conversations_per_minute": 120,
    # More than `loop_guard_replies` replies in `loop_guard_minutes` (another bot answering
    # ours) pauses the conversation until an operator resumes it.
    "loop_guard_replies": 10,
    "loop_guard_minutes": 2.0,
    # For the system prompt's {now}, {date}, {time} and {weekday}.
    "timezone": "UTC",
    # Feeling human (WuzAPI): "typing…" while the reply is produced, a pause per character
    # before each message (capped), replies split at blank lines, customer messages marked read.
    "typing_indicator": True,
    "typing_ms_per_char": 0,
    "typing_max_seconds": 4.0,
    "split_paragraphs": True,
    "mark_read": False,
    # Who gets answered. trigger: "all" (every message), "keyword" (messages that match
    # trigger_keywords with trigger_operator: equals, contains, starts_with or regex) or
    # "fallback" (when no other config on the instance wants the message).
    "trigger": "all",
    "trigger_operator": "contains",
    "trigger_keywords": [],
    # Phone numbers or JIDs; an allow-list, when set, is the only contacts answered.
    "allow_contacts": None,
    "deny_contacts": [],
    # HTTP endpoints of the business the model may call (zapreply.llm.business_tools), and the
    # host names among theirs that may resolve to private or loopback addresses (a service
    # beside zapreply); any other tool host must be public.
    "tools": [],
    "tool_private_hosts": [],
    # A daily allowance of LLM tokens and/or USD (a day in `timezone`); once spent, no LLM
    # call: budget_action "fallback" sends fallback_text, "handoff" pauses the conversation
    # for a person (sending handoff_text). See zapreply.rules.budget.
    "daily_token_budget": None,
    "daily_cost_budget": None,
    "budget_action": "fallback",
    # Group chats: "off" (ignored), "on" (answered like any chat) or "mention" (answered only
    # when the message mentions the bot or replies to one of its messages; the rest is kept as
    # context). bot_number: the bot's own number or JID (or a list: its @lid too), to
    # recognise mentions.
    "groups": "off",
    "bot_number": None,
    # Weekly schedule in `timezone` ({"mon": ["09:00-18:00"], ...}); None: always open.
    # Outside it, "away" keeps the messages without calling the model and sends
    # away_message (if set) once per closed window; "answer" answers anyway.
    "opening_hours": None,
    "away_message": None,
    "outside_hours": "away",
    # Media (see zapreply.replies.media). Voice notes and audio are transcribed with
    # `transcription_model` (any litellm transcription model; `transcription_language` an
    # ISO-639-1 hint such as "pt") and answered as text. Images go to the model as pictures
    # when `vision` is "always", or "auto" and litellm knows the model takes images.
    # `media_fallback_text` is sent, without asking the model, when nothing in what the
    # customer sent can be understood (a document, a video, a sticker, audio that could not be
    # transcribed); None lets the model answer a description such as "[document: nota.pdf]".
    "transcribe_audio": True,
    "transcription_model": "whisper-1",
    "transcription_language": None,
    "vision": "auto",
    "media_fallback_text": None,
    # Messages and events older than this many days are deleted (zapreply.actions.privacy);
    # None keeps them forever.
    "retention_days": 180,
}
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "max_tokens": (int,),
    "history_limit": (int,),
    "fallback_text": (str,),
    "handoff_text": (str,),
    "human_pause_minutes": (int, float),
    "resume_keyword": (str,),
    "reset_keyword": (str,),
    "session_idle_hours": (int, float),
    "max_input_chars": (int,),
    "rate_limit_per_minute": (int,),
    "new_conversations_per_minute": (int,),
    "loop_guard_replies": (int,),
    "loop_guard_minutes": (int, float),
    "timezone": (str,),
    "typing_indicator": (bool,),
    "typing_ms_per_char": (int, float),
    "typing_max_seconds": (int, float),
    "split_paragraphs": (bool,),
    "mark_read": (bool,),
    "trigger": (str,),
    "trigger_operator": (str,),
    "trigger_keywords": (list,),
    "allow_contacts": (list,),
    "deny_contacts": (list,),
    "tools": (list,),
    "tool_private_hosts": (list,),
    "daily_token_budget": (int,),
    "daily_cost_budget": (int, float),
    "budget_action": (str,),
    "groups": (str,),
    "bot_number": (str, list),
    "opening_hours": (dict,),
    "away_message": (str,),
    "outside_hours": (str,),
    "transcribe_audio": (bool,),
    "transcription_model": (str,),
    "transcription_language": (str,),
    "vision": (str,),
    "media_fallback_text": (str,),
    "retention_days": (int,),
}
_CHOICES = {
    "trigger": ("all", "keyword", "fallback"),
    "trigger_operator": ("equals", "contains", "starts_with", "regex"),
    "budget_action": ("fallback", "handoff"),
    "groups": ("off", "on", "mention"),
    "outside_hours": ("away", "answer"),
    "vision": ("auto", "always", "never"),
}
# Options that name something: an empty string would only fail later, at a customer's message.
_NON_EMPTY = ("transcription_model",)


class InvalidConfig(ValueError):
    pass


def validate(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """Check a create (or, with partial, a PATCH) body; return the column values to set."""
    if not isinstance(data, dict):
        raise InvalidConfig("body must be a JSON object")
    known = {"name", "instance", "is_active", "model", "system_prompt", "send",
             "debounce_seconds", "hmac_key", "options", *OPTION_DEFAULTS}
    # What GET shows and a client may echo back; never set this way.
    shown = {"id", "created_at", "updated_at", "webhook_path"}
    unknown = sorted(set(data) - known - shown)
    if unknown:
        raise InvalidConfig(f"unknown field(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in ("name", "instance", "model"):
        if name in data:
            value = data[name]
            if not isinstance(value, str) or not value.strip():
                raise InvalidConfig(f"'{name}' must be a non-empty string")
            if len(value.strip()) > 200:
                raise InvalidConfig(f"'{name}' must be at most 200 characters")
            values[name] = value.strip()
        elif not partial:
            raise InvalidConfig(f"'{name}' is required")
    if "system_prompt" in data:
        if not isinstance(data["system_prompt"], str):
            raise InvalidConfig("'system_prompt' must be a string")
        values["system_prompt"] = data["system_prompt"]
    if "is_active" in data:
        if not isinstance(data["is_active"], bool):
            raise InvalidConfig("'is_active' must be true or false")
        values["is_active"] = data["is_active"]
    if "debounce_seconds" in data:
        value = data["debounce_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 60:
            raise InvalidConfig("'debounce_seconds' must be a number from 0 to 60")
        values["debounce_seconds"] = float(value)
    if "hmac_key" in data:
        values["hmac_key"] = _validate_hmac_key(data["hmac_key"])
    if "send" in data:
        values["send"] = _validate_send(data["send"])
    elif not partial:
        raise InvalidConfig("'send' is required")

    options = data.get("options", {})
    if not isinstance(options, dict):
        raise InvalidConfig("'options' must be an object")
    options = {**options, **{k: data[k] for k in OPTION_DEFAULTS if k in data}}
    for key, value in options.items():
        if key not in _OPTION_TYPES:
            raise InvalidConfig(f"unknown option '{key}'")
        expected = _OPTION_TYPES[key]
        if value is not None and (
            isinstance(value, bool) != (bool in expected) or not isinstance(value, expected)
        ):
            raise InvalidConfig(f"option '{key}' has the wrong type")
        if key == "timezone" and value is not None:
            _check_timezone(value)
        if key == "opening_hours" and value is not None:
            _check_opening_hours(value)
        if key == "bot_number" and value is not None:
            _check_bot_number(value)
        if key in _NON_EMPTY and isinstance(value, str) and not value.strip():
            raise InvalidConfig(f"option '{key}' must not be empty")
        if key in _CHOICES and value is not None and value not in _CHOICES[key]:
            raise InvalidConfig(f"option '{key}' must be one of: {', '.join(_CHOICES[key])}")
        if isinstance(value, list) and key != "tools" \
                and not all(isinstance(v, str) and v for v in value):
            raise InvalidConfig(f"option '{key}' must be a list of non-empty strings")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise InvalidConfig(f"option '{key}' must not be negative")
        if key == "retention_days" and value is not None and not 1 <= value <= 36500:
            raise InvalidConfig("option 'retention_days' must be from 1 to 36500 days, or null "
                                "to keep messages and events forever")
    if options.get("trigger_operator") == "regex":
        import regex

        from zapreply.rules.text import compile_pattern

        for pattern in options.get("trigger_keywords") or []:
            try:
                compile_pattern(pattern)
            except regex.error as exc:
                raise InvalidConfig(f"trigger keyword {pattern!r} is not a valid regex: "
                                    f"{exc}") from None
    if options.get("tools") is not None:
        from zapreply.llm import business_tools, tools

        try:
            options["tools"] = business_tools.check(options["tools"], reserved=set(tools.BUILT_IN))
        except ValueError as exc:
            raise InvalidConfig(str(exc)) from None
    if options or not partial:
        values["options"] = options
    return values


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidConfig(f"unknown timezone {name!r} (use an IANA name like "
                            "'America/Sao_Paulo')") from None


def _check_opening_hours(schedule: Any) -> None:
    from zapreply.rules.hours import BadSchedule, validate

    try:
        validate(schedule)
    except BadSchedule as exc:
        raise InvalidConfig(str(exc)) from None


def _check_bot_number(value: Any) -> None:
    from zapreply.rules.text import bot_id

    numbers = value if isinstance(value, list) else [value]
    if not numbers or not all(isinstance(v, str) and bot_id(v) for v in numbers):
        raise InvalidConfig("option 'bot_number' must be the bot's phone number or JID "
                            "(e.g. '5511900000099' or '100000000000099@lid'), or a list of them")


# WuzAPI refuses shorter per-user HMAC keys.
MIN_HMAC_KEY_LENGTH = 32
MAX_HMAC_KEY_LENGTH = 200


def _validate_hmac_key(key: Any) -> str | None:
    if key is None or key == MASK:
        return key
    if not isinstance(key, str) or not MIN_HMAC_KEY_LENGTH <= len(key) <= MAX_HMAC_KEY_LENGTH \
            or key != key.strip():
        # The key itself is never repeated back: it is a secret.
        raise InvalidConfig(f"'hmac_key' must be WuzAPI's HMAC key of the instance: "
                            f"{MIN_HMAC_KEY_LENGTH} to {MAX_HMAC_KEY_LENGTH} characters without "
                            "surrounding spaces, or null for none")
    return key


def _validate_send(send: Any) -> dict[str, Any]:
    if not isinstance(send, dict):
        raise InvalidConfig("'send' must be an object with driver, base_url and token")
    driver = send.get("driver")
    if driver not in DRIVERS:
        raise InvalidConfig(f"'send.driver' must be one of: {', '.join(DRIVERS)}")
    base_url = send.get("base_url")
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in {"http", "https"} \
            or not urlsplit(base_url).netloc:
        raise InvalidConfig("'send.base_url' must be an http(s) URL")
    token = send.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidConfig("'send.token' must be a non-empty string")
    return {"driver": driver, "base_url": base_url.rstrip("/"), "token": token}


def apply(config: WorkflowConfig, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key == "options":
            if value.get("tools"):
                # Header values come back masked from GET: keep the stored ones.
                from zapreply.llm import business_tools

                try:
                    value = {**value, "tools": business_tools.unmask(
                        value["tools"], (config.options or {}).get("tools"), MASK)}
                except ValueError as exc:
                    raise InvalidConfig(str(exc)) from None
            config.options = {**(config.options or {}), **value}
        elif key == "hmac_key" and value == MASK:
            # A client echoing back what GET returned keeps the stored key.
            if not config.hmac_key:
                raise InvalidConfig("'hmac_key' holds the mask GET shows; send the real key")
        elif key == "send" and value.get("token") == MASK:
            # A client echoing back what GET returned keeps the stored token, but only for the
            # host it was given for: a PATCH must not redirect it to another server.
            stored = config.send or {}
            if not stored.get("token"):
                raise InvalidConfig("'send.token' must be the real token, not the mask GET "
                                    "shows")
            if origin(value.get("base_url")) != origin(stored.get("base_url")):
                raise InvalidConfig("give the token again when changing the host of "
                                    "'send.base_url' (the stored one stays with its host)")
            config.send = {**value, "token": stored.get("token")}
        else:
            setattr(config, key, value)
    # Checked on the result, so a PATCH of either one is checked against the other.
    if ((config.options or {}).get("groups") or "off") != "off" \
            and (config.send or {}).get("driver") != "wuzapi":
        raise InvalidConfig("option 'groups' needs the wuzapi driver (LivChat sends only to "
                            "phone numbers, and a group has none)")


def public_view(config: WorkflowConfig) -> dict[str, Any]:
    send = dict(config.send or {})
    if send.get("token"):
        send["token"] = MASK
    return {
        "id": config.id,
        "name": config.name,
        "instance": config.instance,
        "is_active": config.is_active,
        "model": config.model,
        "system_prompt": config.system_prompt,
        "send": send,
        "debounce_seconds": config.debounce_seconds,
        # The one place the webhook secret is shown: an operator copies it into WuzAPI.
        "webhook_path": webhook_path(config),
        "hmac_key": MASK if config.hmac_key else None,
        "options": _masked(option_values(config)),
        "created_at": config.created_at.isoformat() if config.created_at else None,
        "updated_at": config.updated_at.isoformat() if config.updated_at else None,
    }


def webhook_path(config: WorkflowConfig) -> str | None:
    """The path, with the config's secret, that WuzAPI posts this instance's webhooks to."""
    if not config.webhook_secret or not config.instance:
        return None
    return f"/webhooks/wuzapi/{quote(config.instance, safe='')}/{config.webhook_secret}"


def rotate_webhook_secret(config: WorkflowConfig) -> None:
    """A new secret path; the old one is refused from then on (within CONFIG_CACHE_SECONDS)."""
    config.webhook_secret = new_webhook_secret()


def _masked(options: dict[str, Any]) -> dict[str, Any]:
    if not options.get("tools"):
        return options
    from zapreply.llm import business_tools

    return {**options, "tools": business_tools.masked(options["tools"], MASK)}


def option_values(config: WorkflowConfig) -> dict[str, Any]:
    return {**OPTION_DEFAULTS, **(config.options or {})}


def find_active(session: Session, candidates: list[str]) -> WorkflowConfig | None:
    """The active config whose `instance` matches one of the candidates, in their order."""
    if not candidates:
        return None
    rows = session.scalars(
        select(WorkflowConfig)
        .where(WorkflowConfig.instance.in_(candidates), WorkflowConfig.is_active.is_(True))
        .order_by(WorkflowConfig.id)
    ).all()
    for candidate in candidates:
        for row in rows:
            if row.instance == candidate:
                return row
    return None


# Workers read the config on every message. Like the receiver's lookup (webhook_app.routing),
# they keep what they read for CONFIG_CACHE_SECONDS, so a change applies within that time.
# What is kept is detached from its session and only ever read.
_cache: dict[tuple[str, Any], tuple[float, Any]] = {}


def _cached(key: tuple[str, Any], load: Any) -> Any:
    ttl = get_settings().config_cache_seconds
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    if ttl > 0:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (now + ttl, value)
    return value


def get(session: Session, config_id: int | None) -> WorkflowConfig | None:
    """The config with this id (active or not), or None."""
    if config_id is None:
        return None
    return _cached(("id", config_id), lambda: session.get(WorkflowConfig, config_id))


def active_on(session: Session, instance: str) -> list[WorkflowConfig]:
    """The instance's active configs, oldest first."""
    return _cached(("instance", instance), lambda: list(session.scalars(
        select(WorkflowConfig)
        .where(WorkflowConfig.instance == instance, WorkflowConfig.is_active.is_(True))
        .order_by(WorkflowConfig.id)
    )))


def clear_cache() -> None:
    _cache.clear()
