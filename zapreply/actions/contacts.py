"""A contact's personal data as the front doors ask for it: by a phone number or JID as
typed, refused when it is neither (Invalid), NotFound when nothing is stored about it. The
work itself is zapreply.actions.privacy's."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from zapreply.actions import privacy
from zapreply.actions.errors import NotFound

NOTHING_STORED = "nothing is stored about this contact"


def export_contact(session: Session, raw: str) -> dict[str, Any]:
    """Everything stored about a phone number or JID: its conversations with their messages
    and events, its own messages in groups."""
    data = privacy.export_contact(session, privacy.parse_contact(raw))
    if data is None:
        raise NotFound(NOTHING_STORED)
    return data


def erase_contact(raw: str, *, actor: str) -> dict[str, int]:
    """Erase a contact in a transaction of its own; the `contact.erased` event it leaves
    holds counts only."""
    counts = privacy.erase(privacy.parse_contact(raw), actor=actor)
    if counts is None:
        raise NotFound(NOTHING_STORED)
    return counts
