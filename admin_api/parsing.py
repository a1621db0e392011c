"""Reading an admin API request: its JSON body, ids in the path, query arguments. Each
refuses what it cannot use with zapreply.actions' Invalid, so it answers 400 like any other
bad value."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from zapreply.actions.errors import Invalid
from zapreply.actions.paging import DEFAULT_LIMIT, MAX_LIMIT

MAX_ID = 2**63 - 1


def json_body(*, optional: bool = False) -> Any:
    raw = request.get_data(cache=False)
    if not raw.strip():
        if optional:
            return {}
        raise Invalid("body must be a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Invalid("body is not valid JSON") from None
    _check_storable(data)
    return data


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them, PostgreSQL's does not.
    raise ValueError(f"{name} is not a JSON value")


def _check_storable(data: Any) -> None:
    """PostgreSQL stores no NUL character and no lone surrogate (both valid in JSON text)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise Invalid("strings must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Invalid("strings must be valid Unicode") from None


def parse_id(raw: str, what: str) -> int:
    value = _digits(raw)
    if value is None or not 1 <= value <= MAX_ID:
        raise Invalid(f"{what} must be a positive integer, got {raw[:40]!r}")
    return value


def _digits(raw: str) -> int | None:
    # int() alone would take " 7", "+7", "7_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        return None
    return int(raw)


def id_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    return parse_id(raw, f"'{name}'")


def limit_arg() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    value = _digits(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise Invalid(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    return value


def text_arg(name: str) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if "\x00" in raw:
        raise Invalid(f"'{name}' must not contain NUL characters")
    return raw
