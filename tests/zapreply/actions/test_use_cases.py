"""The use cases raise one kind of error per kind of refusal, so every front door answers
by type: NotFound, Conflict, Invalid."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from zapreply.actions import configs, contacts, conversations, replay
from zapreply.actions.errors import Conflict, Invalid, NotFound
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, ReplyRun, WorkflowConfig


def config_body(**changes: Any) -> dict[str, Any]:
    return {"name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
            "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
            **changes}


@pytest.fixture
def conversation_id(db) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        conversation = Conversation(instance="loja", chat_jid="5511900000001@s.whatsapp.net",
                                    status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        return conversation.id


@pytest.mark.parametrize("field", ["name", "instance", "model"])
def test_a_config_value_longer_than_its_column_is_invalid(db, field) -> None:
    with session_scope() as session, pytest.raises(Invalid, match=f"'{field}' must be at most"):
        configs.create_config(session, config_body(**{field: "x" * 201}))
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []


def test_changing_a_config_that_does_not_exist_is_not_found(db) -> None:
    for change in (lambda s: configs.update_config(s, 7, {"name": "x"}),
                   lambda s: configs.rotate_webhook_secret(s, 7),
                   lambda s: configs.delete_config(s, 7)):
        with session_scope() as session, pytest.raises(NotFound, match="workflow config 7"):
            change(session)


@pytest.mark.parametrize(("reason", "minutes", "message"), [
    ("  ", None, "'reason' must be a non-empty string"),
    (None, None, "'reason' must be a non-empty string"),
    ("x" * 201, None, "'reason' must be at most 200 characters"),
    ("ok", 0, "'minutes' must be a number above 0"),
    ("ok", True, "'minutes' must be a number above 0"),
    ("ok", 366 * 24 * 60 + 1, "'minutes' must be a number above 0"),
    ("ok", "30", "'minutes' must be a number above 0"),
])
def test_a_pause_is_checked_before_the_conversation_is_touched(
        conversation_id, reason, minutes, message) -> None:
    with session_scope() as session, pytest.raises(Invalid, match=message):
        conversations.pause(session, conversation_id, reason=reason, minutes=minutes,
                            actor="test")
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).status == "active"


def test_a_pause_strips_its_reason_and_ends_after_its_minutes(conversation_id) -> None:
    with session_scope() as session:
        paused = conversations.pause(session, conversation_id, reason="  cliente VIP ",
                                     minutes=30, actor="test")
        assert (paused.pause_reason, paused.paused_until is not None) == ("cliente VIP", True)


def test_replaying_a_missing_run_is_not_found_and_a_run_not_failed_a_conflict(
        conversation_id) -> None:
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="sent")
        session.add(run)
        session.flush()
        run_id = run.id

    with session_scope() as session, pytest.raises(NotFound):
        replay.reopen_run(session, run_id + 1, actor="test")
    with session_scope() as session, pytest.raises(Conflict):
        replay.reopen_run(session, run_id, actor="test")


def test_a_contact_is_invalid_when_malformed_and_not_found_when_nothing_is_stored(db) -> None:
    with session_scope() as session, pytest.raises(Invalid):
        contacts.export_contact(session, "not a phone")
    with session_scope() as session, pytest.raises(NotFound):
        contacts.export_contact(session, "+55 11 90000-0001")
    with pytest.raises(NotFound):
        contacts.erase_contact("+55 11 90000-0001", actor="test")
