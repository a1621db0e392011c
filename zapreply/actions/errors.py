"""What a use case can refuse, by kind, so each front door picks its answer by type: the admin
API a status code (NotFound 404, Conflict 409, Invalid 400), the CLI an exit code. The message
is for people and says what to change."""

from __future__ import annotations


class ActionError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ActionError):
    """The thing named does not exist (or no longer does)."""


class Conflict(ActionError):
    """The thing exists, but its state does not allow this now (a run that has not failed)."""


class Invalid(ActionError, ValueError):
    """A value the caller gave is wrong; sending the same again cannot succeed."""
