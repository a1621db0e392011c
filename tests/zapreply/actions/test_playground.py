"""A config's playground, the use cases (zapreply.actions.playground), on both databases:
turns recorded for a worker, replays of a past conversation's last customer turn, and
everything kept apart from customers' conversations."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.factories import make_config
from tests.zapreply.replies.test_responder import receive
from zapreply.actions import inbox, playground, privacy
from zapreply.actions.errors import Invalid, NotFound
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import (
    Conversation,
    DailyUsage,
    Event,
    Message,
    PlaygroundTurn,
    ReplyRun,
    WorkflowConfig,
    utcnow,
)

CHAT = "0123456789abcdef"
ACTOR = "operator:ana"


def _sent(conversation_id: int, text: str) -> None:
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id)
        session.add(Message(conversation_id=conversation_id, instance=conversation.instance,
                            role="assistant", content=text, status="sent"))


def test_a_chat_turn_is_queued_with_only_the_edits_that_differ_and_an_event(database):
    config_id = make_config()
    with session_scope() as session:
        turn = playground.start_chat_turn(
            session, config_id, CHAT, "  Oi, vocês abrem amanhã?  ", dry_run=True,
            edits=playground.Edits(system_prompt="Você é o atendente da Loja.",
                                   model="openai/outro-modelo"), actor=ACTOR)
        turn_id = turn.id
    with session_scope() as session:
        turn = session.get(PlaygroundTurn, turn_id)
        assert (turn.status, turn.kind, turn.chat, turn.customer_text, turn.dry_run) == \
            ("queued", "chat", CHAT, "Oi, vocês abrem amanhã?", True)
        # The system prompt is the stored one: not an edit.
        assert turn.overrides == {"model": "openai/outro-modelo"}
        event = session.scalar(select(Event).where(Event.type == EventType.PLAYGROUND_STARTED))
    assert event.conversation_id is None
    assert event.payload == {"actor": ACTOR, "workflow_config_id": config_id,
                             "turn_id": turn_id, "kind": "chat", "dry_run": True,
                             "edited": ["model"], "replayed_conversation_id": None}


@pytest.mark.parametrize(("chat", "text", "model", "message"), [
    (CHAT, "   ", None, "the message is empty"),
    (CHAT, "x" * 4097, None, "at most 4096 characters"),
    ("not-a-chat", "oi", None, "'chat' must be"),
    (CHAT, "oi", "x" * 201, "'model' must be at most 200 characters"),
])
def test_bad_input_is_refused_with_a_message_and_nothing_recorded(database, chat, text, model,
                                                                  message):
    config_id = make_config()
    with pytest.raises(Invalid, match=message), session_scope() as session:
        playground.start_chat_turn(session, config_id, chat, text, dry_run=False,
                                   edits=playground.Edits(model=model), actor=ACTOR)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(PlaygroundTurn)) == 0


def test_a_turn_for_a_config_that_does_not_exist_is_not_found(database):
    with pytest.raises(NotFound), session_scope() as session:
        playground.start_chat_turn(session, 999, CHAT, "oi", dry_run=True, actor=ACTOR)


def test_a_replay_takes_the_last_customer_turn_and_what_was_sent_after_it(database):
    config_id = make_config()
    conversation_id = receive(config_id, "Oi", "R1")
    _sent(conversation_id, "Olá! Como posso ajudar?")
    receive(config_id, "Quanto custa a entrega?", "R2")
    receive(config_id, "Para Campinas", "R3")
    _sent(conversation_id, "A entrega custa R$ 15.")
    _sent(conversation_id, "Chega em 2 dias.")
    with session_scope() as session:
        turn = playground.start_replay(session, config_id, conversation_id, dry_run=True,
                                       actor=ACTOR)
        last = session.scalar(select(func.max(Message.id)).where(Message.role == "customer"))
        assert (turn.kind, turn.chat, turn.replayed_conversation_id) == \
            ("replay", playground.REPLAY_CHAT, conversation_id)
        assert turn.replayed_message_id == last
        assert turn.customer_text == "Quanto custa a entrega?\nPara Campinas"
        assert turn.old_answer == "A entrega custa R$ 15.\n\nChega em 2 dias."


def test_a_replay_of_a_turn_never_answered_says_nothing_was_sent(database):
    config_id = make_config()
    conversation_id = receive(config_id, "Oi", "N1")
    with session_scope() as session:
        turn = playground.start_replay(session, config_id, conversation_id, dry_run=False,
                                       actor=ACTOR)
        assert (turn.customer_text, turn.old_answer) == ("Oi", None)


def test_a_replay_of_an_unknown_or_foreign_conversation_is_refused(database):
    config_id = make_config()
    other = make_config(name="Outra", instance="outra-loja")
    foreign = receive(other, "Oi", "F1")
    for conversation_id, message in ((None, "pick a conversation"),
                                     (424242, "is not one of this config's"),
                                     (foreign, "is not one of this config's")):
        with pytest.raises(Invalid, match=message), session_scope() as session:
            playground.start_replay(session, config_id, conversation_id, dry_run=True,
                                    actor=ACTOR)


def test_a_conversation_without_a_customer_message_cannot_be_replayed(database):
    config_id = make_config()
    with session_scope() as session:
        conversation = Conversation(instance="loja-teste", chat_jid="5511977770000@s.whatsapp.net",
                                    workflow_config_id=config_id, status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        conversation_id = conversation.id
    with pytest.raises(Invalid, match="no customer message"), session_scope() as session:
        playground.start_replay(session, config_id, conversation_id, dry_run=True, actor=ACTOR)


def test_playground_turns_are_not_conversations_runs_or_budget_use(database):
    config_id = make_config(options={"daily_token_budget": 1000})
    with session_scope() as session:
        playground.start_chat_turn(session, config_id, CHAT, "oi", dry_run=True, actor=ACTOR)
        assert inbox.list_inbox(session, now=utcnow()).rows == []
        for model in (Conversation, Message, ReplyRun, DailyUsage):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model


def test_erasing_a_contact_removes_the_replays_of_their_conversation(database):
    config_id = make_config()
    conversation_id = receive(config_id, "Meu CPF é 123", "E1")
    with session_scope() as session:
        playground.start_replay(session, config_id, conversation_id, dry_run=True, actor=ACTOR)
        playground.start_chat_turn(session, config_id, CHAT, "oi", dry_run=True, actor=ACTOR)

    privacy.erase(privacy.parse_contact("5511900000001"), actor="admin")

    with session_scope() as session:
        assert session.scalars(select(PlaygroundTurn.kind)).all() == ["chat"]


def test_the_replayable_conversations_are_this_configs_with_a_customer_message(database):
    config_id = make_config()
    other = make_config(name="Outra", instance="outra-loja")
    mine = receive(config_id, "Oi", "L1")
    receive(other, "Oi", "L2", chat="5511900000009@s.whatsapp.net")
    with session_scope() as session:
        found = playground.replayable(session, session.get(WorkflowConfig, config_id))
        assert [c.id for c in found] == [mine]
