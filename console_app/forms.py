"""Reading form and query values: each wrong one is an Invalid with a message a person can
act on (a 400 page), never a 500."""

from __future__ import annotations

from flask import request

from zapreply.actions.errors import Invalid

MAX_ID = 2**63 - 1


def optional_id(name: str, *, source: str = "args") -> int | None:
    raw = (request.args if source == "args" else request.form).get(name, "").strip()
    if not raw:
        return None
    return parse_id(raw, name)


def parse_id(raw: str, name: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise Invalid(f"'{name}' must be a positive whole number")
    return int(raw)


def ids(name: str) -> list[int]:
    return [parse_id(raw.strip(), name) for raw in request.form.getlist(name)]


def text(name: str, *, max_length: int = 200, source: str = "args") -> str | None:
    raw = (request.args if source == "args" else request.form).get(name, "").strip()
    if len(raw) > max_length:
        raise Invalid(f"'{name}' must be at most {max_length} characters")
    return raw or None


def optional_minutes(name: str) -> float | None:
    """Blank: until given back."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"'{name}' must be a number of minutes, or blank") from None
    return value
