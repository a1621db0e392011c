"""Console operators: add, list, disable, enable, reset a password, and sign in.

Passwords are hashed with scrypt (werkzeug.security) and never stored or logged. Sign-ins are
throttled by the refusals of the last `THROTTLE_WINDOW`, per username and per address, kept in
the database so every console process counts the same ones.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from zapreply.actions.errors import Conflict, Invalid, NotFound
from zapreply.storage import events
from zapreply.storage.events import EventType
from zapreply.storage.models import Operator, OperatorRole, SignInFailure, utcnow

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 10, 200
THROTTLE_WINDOW = timedelta(minutes=15)
# Refusals in the window before sign-ins are refused unread: per username (guessing one
# account's password) and per address (trying many accounts).
MAX_FAILURES_PER_USERNAME = 5
MAX_FAILURES_PER_ADDRESS = 30
# Checked against when the username is unknown, so a refusal takes as long either way.
_DUMMY_HASH = generate_password_hash("not a password of anyone", method="scrypt")


class Throttled(Conflict):
    """Too many refused sign-ins lately; try again later."""


def add_operator(session: Session, username: Any, password: Any, role: Any, *,
                 actor: str) -> Operator:
    username = _username(username)
    role = _role(role)
    if session.scalar(select(Operator.id).where(Operator.username == username)) is not None:
        raise Conflict(f"operator {username!r} already exists")
    operator = Operator(username=username, password_hash=_hash(password), role=role,
                        is_active=True)
    session.add(operator)
    session.flush()
    events.record(session, EventType.OPERATOR_ADDED, actor=actor, operator=username, role=role)
    return operator


def list_operators(session: Session) -> list[Operator]:
    return list(session.scalars(select(Operator).order_by(Operator.username)))


def get_operator(session: Session, username: Any) -> Operator:
    operator = session.scalar(select(Operator).where(Operator.username == _username(username)))
    if operator is None:
        raise NotFound(f"no operator {username!r}")
    return operator


def set_active(session: Session, username: Any, active: bool, *, actor: str) -> Operator:
    """Disable (signs them out everywhere at their next request) or enable an operator."""
    operator = get_operator(session, username)
    operator.is_active = active
    session.flush()
    events.record(session, EventType.OPERATOR_ENABLED if active else EventType.OPERATOR_DISABLED,
                  actor=actor, operator=operator.username)
    return operator


def reset_password(session: Session, username: Any, password: Any, *, actor: str) -> Operator:
    """A new password; sessions signed in with the old one end at their next request."""
    operator = get_operator(session, username)
    operator.password_hash = _hash(password)
    session.flush()
    events.record(session, EventType.OPERATOR_PASSWORD_RESET, actor=actor,
                  operator=operator.username)
    return operator


def sign_in(session: Session, username: Any, password: Any, *, remote_addr: str,
            now: datetime | None = None) -> Operator | None:
    """The operator these credentials belong to, or None (and the refusal counted). Raises
    Throttled, without checking the password, after too many recent refusals."""
    now = now or utcnow()
    name = username.strip().lower()[:64] if isinstance(username, str) else ""
    address = (remote_addr or "unknown")[:64]
    since = now - THROTTLE_WINDOW
    by_name = session.scalar(select(func.count()).where(
        SignInFailure.username == name, SignInFailure.created_at > since))
    by_address = session.scalar(select(func.count()).where(
        SignInFailure.remote_addr == address, SignInFailure.created_at > since))
    if by_name >= MAX_FAILURES_PER_USERNAME or by_address >= MAX_FAILURES_PER_ADDRESS:
        raise Throttled("too many failed sign-ins; wait a few minutes and try again")
    operator = session.scalar(select(Operator).where(Operator.username == name)) if name else None
    given = password if isinstance(password, str) else ""
    valid = check_password_hash(operator.password_hash if operator else _DUMMY_HASH, given)
    if operator is None or not valid or not operator.is_active:
        session.add(SignInFailure(username=name, remote_addr=address, created_at=now))
        events.record(session, EventType.OPERATOR_SIGN_IN_FAILED, operator=name or None)
        return None
    session.execute(delete(SignInFailure).where(SignInFailure.username == name))
    session.execute(delete(SignInFailure).where(SignInFailure.created_at <= since))
    events.record(session, EventType.OPERATOR_SIGNED_IN, actor=actor_of(operator))
    return operator


def sign_out(session: Session, operator: Operator) -> None:
    events.record(session, EventType.OPERATOR_SIGNED_OUT, actor=actor_of(operator))


def actor_of(operator: Operator) -> str:
    """How events name what an operator did."""
    return f"operator:{operator.username}"


def session_version(operator: Operator) -> str:
    """Changes when the password does: a session remembers it, and ends when it differs."""
    return operator.password_hash[-16:]


def view(operator: Operator) -> dict[str, Any]:
    return {"username": operator.username, "role": operator.role,
            "is_active": operator.is_active, "created_at": operator.created_at.isoformat()}


def _username(value: Any) -> str:
    if not isinstance(value, str) or not USERNAME.match(value.strip().lower()):
        raise Invalid("a username is 2 to 64 characters: lowercase letters, digits, '.', '_' "
                      "or '-', starting with a letter or digit")
    return value.strip().lower()


def _role(value: Any) -> str:
    try:
        return OperatorRole(value)
    except ValueError:
        raise Invalid("'role' must be admin or agent") from None


def _hash(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise Invalid(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return generate_password_hash(password, method="scrypt")
