"""Contacts (zapreply.actions.contacts): merging one person's LID and phone conversations under
their leases, a contact's notes, and the CLI's `zapreply contact notes` and `zapreply contacts
merge-split`; on PostgreSQL and SQLite."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from tests.factories import INSTANCE, make_config
from zapreply import cli
from zapreply.actions import contacts, privacy
from zapreply.replies import inbound, leases
from zapreply.storage.db import session_scope
from zapreply.storage.models import (
    ContactAddress,
    Conversation,
    ConversationStatus,
    Event,
    Message,
    utcnow,
)

LID = "100000000000777@lid"
PHONE = "5511900000777@s.whatsapp.net"

pytestmark = pytest.mark.usefixtures("database")


def receive(config_id: int, text: str, wa_id: str, chat: str, alt: str | None = None) -> int:
    with session_scope() as session:
        return inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
            "wa_message_id": wa_id, "chat_jid": chat, "sender_jid": chat,
            "contact_phone": "5511900000777" if PHONE in (chat, alt) else None,
            "push_name": "Ana", "from_me": False, "timestamp": None, "text": text,
            "media_type": None, "chat_alt_jid": alt,
        }).conversation_id


def split_person() -> tuple[int, int, int]:
    """A config and one person's two conversations, made before their addresses were paired,
    then the pair learnt from a message carrying both."""
    config_id = make_config()
    by_lid = receive(config_id, "pelo lid", "3A01", LID)
    by_phone = receive(config_id, "pelo número", "3A02", PHONE)
    assert receive(config_id, "os dois", "3A03", LID, PHONE) == by_lid
    return config_id, by_lid, by_phone


def test_a_message_with_both_addresses_opens_the_conversation_under_the_phone_and_pairs_them():
    config_id = make_config()
    first = receive(config_id, "oi", "3A01", LID, PHONE)
    assert receive(config_id, "pelo número", "3A02", PHONE) == first
    assert receive(config_id, "de novo, só o lid", "3A03", LID) == first
    with session_scope() as session:
        assert session.get(Conversation, first).chat_jid == PHONE
        assert [(p.lid_jid, p.phone_jid) for p in session.scalars(select(ContactAddress))] \
            == [(LID, PHONE)]


def test_a_reply_run_holding_either_conversation_holds_the_merge_off_and_is_fenced_out_after():
    _, by_lid, by_phone = split_person()
    with session_scope() as session:
        token = leases.claim_conversation(session, by_phone, "worker-1", 60)
    assert token is not None

    assert contacts.merge_split(actor="test") == {"merged": [], "busy": [[by_lid, by_phone]]}
    with session_scope() as session:
        assert session.scalar(select(Conversation.id).where(Conversation.id == by_phone))

    # The worker stalls past its lease: the merge goes ahead and the worker can write no more.
    with session_scope() as session:
        session.execute(update(Conversation).where(Conversation.id == by_phone)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    result = contacts.merge_split(actor="test")
    assert result["busy"] == [] and result["merged"][0]["messages"] == 1
    with session_scope() as session:
        assert not leases.renew(session, by_phone, token, 60)
        kept = session.get(Conversation, by_lid)
        assert (kept.lease_owner, kept.lease_expires_at) == (None, None)
        assert [m.content for m in session.scalars(
            select(Message).where(Message.conversation_id == by_lid).order_by(Message.id))] \
            == ["pelo lid", "pelo número", "os dois"]
        assert session.scalar(select(Event.payload).where(Event.type == "contact.merged")) \
            == {"actor": "test", "merged_conversation_id": by_phone, "messages": 1,
                "runs": 0, "events": 1}
    assert contacts.merge_split(actor="test") == {"merged": [], "busy": []}


def test_the_merged_conversation_keeps_a_pause_and_both_notes():
    _, by_lid, by_phone = split_person()
    with session_scope() as session:
        gone = session.get(Conversation, by_phone)
        gone.status, gone.pause_reason, gone.notes = (
            ConversationStatus.PAUSED, "human took over", "cliente VIP")
        session.get(Conversation, by_lid).notes = "mora em Campinas"
    contacts.merge_split(instance=INSTANCE, actor="test")
    with session_scope() as session:
        kept = session.get(Conversation, by_lid)
        assert (kept.status, kept.pause_reason, kept.notes) == (
            ConversationStatus.PAUSED, "human took over", "mora em Campinas\ncliente VIP")


def test_the_cli_merges_split_conversations_and_edits_a_contacts_notes(capsys):
    _, by_lid, by_phone = split_person()
    assert cli.main(["contacts", "merge-split", "--instance", "another"]) == 0
    assert json.loads(capsys.readouterr().out)["merged"] == []
    assert cli.main(["contacts", "merge-split"]) == 0
    assert json.loads(capsys.readouterr().out)["merged"][0]["merged_conversation_id"] \
        == by_phone

    assert cli.main(["contact", "notes", "+55 11 90000-0777", "--instance", INSTANCE,
                     "--set", "prefere PIX\ncliente VIP"]) == 0
    assert json.loads(capsys.readouterr().out)["facts"] == ["prefere PIX", "cliente VIP"]
    assert cli.main(["contact", "notes", LID, "--instance", INSTANCE]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["conversation_id"], shown["notes"]) == (by_lid, "prefere PIX\ncliente VIP")
    assert cli.main(["contact", "notes", LID, "--instance", INSTANCE, "--clear"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == ""

    assert cli.main(["contact", "notes", "abc", "--instance", INSTANCE]) == 2
    assert cli.main(["contact", "notes", "5511900000123", "--instance", INSTANCE]) == 1
    assert cli.main(["contact", "notes", LID, "--instance", "  "]) == 2
    assert cli.main(["contact", "notes", LID, "--instance", INSTANCE,
                     "--set", "x" * 4001]) == 2
    assert "error:" in capsys.readouterr().err


def test_retention_deletes_a_pair_of_addresses_once_no_conversation_is_under_either():
    config_id = make_config()
    receive(config_id, "oi", "3A01", LID, PHONE)
    other_lid, other_phone = "100000000000888@lid", "5511900000888@s.whatsapp.net"
    gone = receive(config_id, "oi", "3A02", other_lid, other_phone)
    with session_scope() as session:
        session.execute(delete(Message).where(Message.conversation_id == gone))
        session.execute(delete(Event).where(Event.conversation_id == gone))
        session.execute(delete(Conversation).where(Conversation.id == gone))
        for pair in session.scalars(select(ContactAddress)):
            pair.created_at -= timedelta(days=2)

    summaries = privacy.purge_expired()

    assert {"workflow_config_id": None, "addresses": 1} in summaries
    with session_scope() as session:
        assert [p.lid_jid for p in session.scalars(select(ContactAddress))] == [LID]
