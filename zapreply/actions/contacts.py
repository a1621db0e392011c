"""A contact as the front doors ask for it, by a phone number or JID as typed (refused when it
is neither: Invalid): their personal data (NotFound when nothing is stored; the work itself is
zapreply.actions.privacy's), their notes on an instance, and merging the conversations one
person's LID and phone JID left apart."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zapreply.actions import privacy
from zapreply.actions.errors import Conflict, Invalid, NotFound
from zapreply.rules import conversations, notes
from zapreply.storage import contacts as addresses_store
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, RunStatus, utcnow

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


# --- notes -------------------------------------------------------------------------------------


def _conversations_of(session: Session, instance: str | None, raw: str, *,
                      lock: bool = False) -> list[Conversation]:
    """The contact's one-to-one conversations on the instance, under either of their
    addresses, oldest first."""
    if not instance or not instance.strip():
        raise Invalid("the instance is required (the WuzAPI instance the contact writes to)")
    contact = privacy.parse_contact(raw)
    contact = privacy.with_other_forms(
        contact, addresses_store.addresses(session, instance, contact.jids))
    query = select(Conversation).where(
        Conversation.instance == instance, privacy.own_conversations(contact)
    ).order_by(Conversation.id)
    if lock:
        query = query.with_for_update()
    found = list(session.scalars(query))
    if not found:
        raise NotFound("no conversation with this contact on this instance")
    return found


def notes_of(session: Session, instance: str | None, raw: str) -> dict[str, Any]:
    """A contact's notes on an instance (one conversation's, as a merge leaves them)."""
    conversation = _conversations_of(session, instance, raw)[0]
    return _notes_view(conversation)


def set_notes(session: Session, instance: str | None, raw: str, value: Any, *,
              actor: str) -> dict[str, Any]:
    """Replace a contact's notes (None or "" clears them): one fact a line, at most
    MAX_NOTES_CHARS. A run adding facts at the same moment adds them before or after, whole
    (it holds the conversation's row while it does)."""
    if value is not None and not isinstance(value, str):
        raise Invalid("'notes' must be a string (one fact a line) or null")
    cleaned = "\n".join(notes.facts_of(value)) if value else ""
    if len(cleaned) > notes.MAX_NOTES_CHARS:
        raise Invalid(f"notes are at most {notes.MAX_NOTES_CHARS} characters")
    found = _conversations_of(session, instance, raw, lock=True)
    for conversation in found:
        conversation.notes = cleaned or None
        events.record(session, EventType.CONTACT_NOTES_UPDATED,
                      conversation_id=conversation.id, actor=actor, chars=len(cleaned))
    session.flush()
    return _notes_view(found[0])


def _notes_view(conversation: Conversation) -> dict[str, Any]:
    return {"instance": conversation.instance, "conversation_id": conversation.id,
            "notes": conversation.notes or "", "facts": notes.facts_of(conversation.notes)}


# --- one person's split conversations ----------------------------------------------------------

MERGE_LEASE_SECONDS = 60.0


def merge_split(*, instance: str | None = None, actor: str) -> dict[str, Any]:
    """Merge every conversation pair that one person's two addresses left apart (a LID's and
    a phone's, known to be one person since: zapreply.storage.contacts), each pair in a
    transaction of its own. Safe to run again (a merged pair is no longer split) and while
    workers run: a pair whose conversation a reply run holds is left for the next time
    (`busy`)."""
    with session_scope() as session:
        pairs = [(pair.instance, pair.lid_jid, pair.phone_jid)
                 for pair in addresses_store.split_pairs(session, instance)]
    merged: list[dict[str, Any]] = []
    busy: list[list[int]] = []
    for pair_instance, lid, phone in pairs:
        try:
            with session_scope() as session:
                done = merge_pair(session, pair_instance, lid, phone, actor=actor)
        except Busy as exc:
            busy.append(exc.conversation_ids)
            continue
        if done is not None:
            merged.append(done)
    return {"merged": merged, "busy": busy}


class Busy(Conflict):
    """A reply run holds one of the conversations: merge later."""

    def __init__(self, conversation_ids: list[int]) -> None:
        super().__init__("a reply is being produced for one of these conversations; "
                         "try again in a moment")
        self.conversation_ids = conversation_ids


def merge_pair(session: Session, instance: str, lid: str, phone: str, *,
               actor: str) -> dict[str, Any] | None:
    """Make the conversations of `lid` and `phone` on the instance one: the older keeps its
    id and takes the other's messages, runs, events, pause and notes; the other is deleted.
    None when there are not two.

    Both leases are taken first (a conditional UPDATE, as a worker claims one: see
    zapreply.replies.leases), in this
    transaction: a reply run of either cannot interleave, and a run that held one and
    stalled finds its token superseded (the deleted one has no token left) and writes
    nothing."""
    found = list(session.scalars(
        select(Conversation).where(Conversation.instance == instance,
                                   Conversation.chat_jid.in_([lid, phone]))
        .order_by(Conversation.id)))
    if len(found) < 2:
        return None
    kept, gone = found
    ids = [kept.id, gone.id]
    owner = f"merge:{uuid.uuid4().hex[:12]}"
    if not addresses_store.take_leases(session, ids, owner, MERGE_LEASE_SECONDS):
        raise Busy(ids)
    session.expire_all()  # the claims moved the tokens on
    kept, gone = session.get(Conversation, ids[0]), session.get(Conversation, ids[1])
    open_runs = session.scalar(select(func.count(func.distinct(ReplyRun.conversation_id)))
                               .where(ReplyRun.conversation_id.in_(ids),
                                      ReplyRun.status == RunStatus.RUNNING)) or 0
    if open_runs > 1:
        # Two runs waiting for a retry would answer one history twice.
        raise Busy(ids)
    connection = session.connection()
    moved = {
        "messages": connection.execute(update(Message).where(
            Message.conversation_id == gone.id).values(conversation_id=kept.id)).rowcount,
        "runs": connection.execute(update(ReplyRun).where(
            ReplyRun.conversation_id == gone.id).values(conversation_id=kept.id)).rowcount,
        "events": connection.execute(update(Event).where(
            Event.conversation_id == gone.id).values(conversation_id=kept.id)).rowcount,
    }
    kept.contact_phone = kept.contact_phone or gone.contact_phone
    kept.contact_name = kept.contact_name or gone.contact_name
    kept.workflow_config_id = kept.workflow_config_id or gone.workflow_config_id
    if gone.last_inbound_at and (kept.last_inbound_at is None
                                 or gone.last_inbound_at > kept.last_inbound_at):
        kept.last_inbound_at = gone.last_inbound_at
    now = utcnow()
    if conversations.is_paused(gone, now) and not conversations.is_paused(kept, now):
        # A person took one of them over: the bot must not answer the merged one after them.
        kept.status, kept.paused_until, kept.pause_reason = (
            gone.status, gone.paused_until, gone.pause_reason)
    if gone.notes:
        kept.notes = notes.with_facts(kept.notes, notes.facts_of(gone.notes),
                                      notes.MAX_NOTES_CHARS)[0] or None
    session.delete(gone)
    kept.lease_owner, kept.lease_expires_at = None, None
    session.flush()
    events.record(session, EventType.CONTACT_MERGED, conversation_id=kept.id, actor=actor,
                  merged_conversation_id=gone.id, **moved)
    return {"conversation_id": kept.id, "merged_conversation_id": gone.id, **moved}
