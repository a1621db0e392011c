"""Workflow configs: validation, masking and lookup. Shared by the admin API, the CLI, the
receiver and the workers."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.net.http import origin
from zapreply.rules.options import DEFAULTS, DEFINITIONS, InvalidConfig, Options, check
from zapreply.settings import get_settings
from zapreply.storage import knowledge as knowledge_store
from zapreply.storage.models import WorkflowConfig, new_webhook_secret

DRIVERS = ("wuzapi", "livchat")
MASK = "********"


def validate(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """Check a create (or, with partial, a PATCH) body; return the column values to set."""
    if not isinstance(data, dict):
        raise InvalidConfig("body must be a JSON object")
    known = {"name", "instance", "is_active", "model", "system_prompt", "send",
             "debounce_seconds", "hmac_key", "options", *DEFINITIONS}
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
    options = {**options, **{k: data[k] for k in DEFINITIONS if k in data}}
    for key, value in options.items():
        check(key, value)
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
        "options": _masked({**DEFAULTS, **(config.options or {})}),
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


def options_of(config: WorkflowConfig) -> Options:
    """The config's options. Kept on the row, for as long as its options are the same object:
    a cached row is read on every message, and an update assigns a new mapping."""
    stored = config.options
    kept = config.__dict__.get("_options_of")
    if kept is not None and kept[0] is stored:
        return kept[1]
    options = Options.of(stored)
    config.__dict__["_options_of"] = (stored, options)
    return options


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


def has_knowledge(session: Session, config_id: int) -> bool:
    """Whether the config has documents or FAQ entries to search, kept as long as the config
    itself: a reply asks on every run, and a first document (or the last one deleted) applies
    within CONFIG_CACHE_SECONDS, as a config change does."""
    return _cached(("knowledge", config_id),
                   lambda: knowledge_store.has_knowledge(session, config_id))


def clear_cache() -> None:
    _cache.clear()
