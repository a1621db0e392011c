"""Personal data (zapreply.actions.privacy): reading a contact, its export, its erasure, retention, and
the CLI's `zapreply contact export|erase`."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from tests.factories import INSTANCE, make_config
from zapreply import cli
from zapreply.actions import privacy
from zapreply.replies import inbound, responder
from zapreply.rules import configs
from zapreply.storage.db import get_engine, session_scope
from zapreply.storage.models import ContactAddress, Conversation, Event, Message, ReplyRun, utcnow

ANA = "5511900000001"
BRUNO = "5511900000002"
GROUP = "120363000000000001@g.us"


def receive(config_id: int, text: str, wa_id: str, phone: str = ANA,
            name: str = "Ana Cliente") -> int:
    chat = f"{phone}@s.whatsapp.net"
    with session_scope() as session:
        recorded = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
            "wa_message_id": wa_id, "chat_jid": chat, "sender_jid": chat,
            "contact_phone": phone, "push_name": name, "from_me": False,
            "timestamp": None, "text": text, "media_type": None,
        })
    return recorded.conversation_id


def receive_in_group(config_id: int, text: str, wa_id: str, phone: str, name: str) -> int:
    with session_scope() as session:
        recorded = inbound.record_inbound(session, config_id=config_id, instance=INSTANCE, message={
            "wa_message_id": wa_id, "chat_jid": GROUP, "sender_jid": f"1000{phone[-8:]}@lid",
            "contact_phone": phone, "push_name": name, "from_me": False, "is_group": True,
            "timestamp": None, "text": text, "media_type": None,
        })
    return recorded.conversation_id


def everything() -> str:
    """Every row of the tables that hold conversation data, as text."""
    with session_scope() as session:
        rows = []
        for model in (Conversation, Message, ReplyRun, Event, ContactAddress):
            for row in session.scalars(select(model)):
                rows.append({c.name: getattr(row, c.key) for c in model.__mapper__.columns})
    return json.dumps(rows, default=str, ensure_ascii=False)


def count(model) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


# Reading a contact.


@pytest.mark.parametrize(("raw", "phone", "jid"), [
    ("+55 11 90000-0001", ANA, f"{ANA}@s.whatsapp.net"),
    ("(55) 11 9.0000.0001", ANA, f"{ANA}@s.whatsapp.net"),
    (ANA, ANA, f"{ANA}@s.whatsapp.net"),
    (f"{ANA}@s.whatsapp.net", ANA, f"{ANA}@s.whatsapp.net"),
    (f"{ANA}:12@s.whatsapp.net", ANA, f"{ANA}@s.whatsapp.net"),
    ("100000000000001@lid", None, "100000000000001@lid"),
])
def test_a_contact_is_read_from_a_formatted_number_digits_or_a_jid(raw, phone, jid):
    contact = privacy.parse_contact(raw)
    assert contact.phone == phone
    assert jid in contact.jids


@pytest.mark.parametrize("raw", [
    "", "   ", "abc", "55 11 9000O-0001", "123456", "1234567890123456", f"{GROUP}",
    "5511900000001@broadcast", "ana@s.whatsapp.net", "５５１１９０００００００１",
])
def test_what_is_neither_a_phone_nor_a_persons_jid_is_refused(raw):
    with pytest.raises(privacy.BadContact):
        privacy.parse_contact(raw)


# Export.


def test_the_export_holds_the_contacts_conversation_messages_and_events_and_no_one_elses(
    db, llm, wuzapi
):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "quero meu pedido", "E1")
    responder.answer_conversation(conversation_id, owner="test")
    receive(config_id, "sou o Bruno", "E2", phone=BRUNO, name="Bruno")

    with session_scope() as session:
        data = privacy.export_contact(session, privacy.parse_contact("+55 11 90000-0001"))

    assert data["contact"]["phone"] == ANA
    [conversation] = data["conversations"]
    assert conversation["chat_jid"] == f"{ANA}@s.whatsapp.net"
    assert conversation["contact_name"] == "Ana Cliente"
    assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
        ("customer", "quero meu pedido"), ("assistant", "Resposta: quero meu pedido")]
    assert [e["type"] for e in conversation["events"]] == [
        "message.received", "llm.completed", "message.sent"]
    assert "Bruno" not in json.dumps(data) and BRUNO not in json.dumps(data)


def test_the_export_of_a_group_member_holds_their_own_messages_only(db, wuzapi):
    config_id = make_config(wuzapi, options={"groups": "on"})
    receive_in_group(config_id, "eu sou a Ana no grupo", "G1", ANA, "Ana")
    receive_in_group(config_id, "eu sou o Bruno no grupo", "G2", BRUNO, "Bruno")

    with session_scope() as session:
        data = privacy.export_contact(session, privacy.parse_contact(ANA))

    assert data["conversations"] == []
    assert [m["content"] for m in data["group_messages"]] == ["eu sou a Ana no grupo"]
    assert data["group_messages"][0]["group_jid"] == GROUP
    assert "Bruno" not in json.dumps(data)


def test_inline_media_bytes_are_described_not_exported(db, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "", "M1")
    with session_scope() as session:
        session.execute(update(Message).where(Message.conversation_id == conversation_id).values(
            media_type="image", extra={"media": {"mimetype": "image/jpeg", "base64": "QUJD"}}))

    with session_scope() as session:
        data = privacy.export_contact(session, privacy.parse_contact(ANA))

    message = data["conversations"][0]["messages"][0]
    assert message["extra"]["media"] == {"mimetype": "image/jpeg"}


def test_nothing_is_exported_or_erased_for_an_unknown_contact(db, wuzapi):
    receive(make_config(wuzapi), "oi", "U1")

    with session_scope() as session:
        assert privacy.export_contact(session, privacy.parse_contact(BRUNO)) is None
        assert privacy.erase_contact(session, privacy.parse_contact(BRUNO), actor="test") is None
    assert count(Event) == 1  # message.received only: no erasure recorded


# Erasure.


def test_erasure_deletes_the_contacts_conversation_and_records_counts_only(db, llm, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "meu CPF é 123.456.789-00", "D1")
    responder.answer_conversation(conversation_id, owner="test")
    with session_scope() as session:
        inbound.record_ignored(session, instance=INSTANCE, reason="status or broadcast",
                               wa_message_id="D0", chat_jid=f"{ANA}@s.whatsapp.net")
    receive(config_id, "oi", "D2", phone=BRUNO, name="Bruno")

    with session_scope() as session:
        counts = privacy.erase_contact(session, privacy.parse_contact(f"+{ANA}"), actor="test")

    assert counts == {"conversations": 1, "messages": 2, "events": 4, "runs": 1,
                      "group_messages": 0, "addresses": 0}
    left = everything()
    for trace in (ANA, "Ana Cliente", "123.456.789-00", "D0", "D1"):
        assert trace not in left
    assert "Bruno" in left  # the other contact is untouched
    with session_scope() as session:
        erased = session.scalars(select(Event).where(Event.type == "contact.erased")).one()
    assert erased.conversation_id is None and erased.run_id is None
    assert erased.payload == {"actor": "test", **counts}


def test_erasure_in_a_group_takes_the_members_messages_and_the_replies_to_them_alone(
    db, llm, wuzapi
):
    config_id = make_config(wuzapi, options={"groups": "on"})
    group_id = receive_in_group(config_id, "meu endereço é Rua A, 1", "G1", ANA, "Ana")
    responder.answer_conversation(group_id, owner="test")
    receive_in_group(config_id, "e o meu pedido?", "G2", BRUNO, "Bruno")
    receive_in_group(config_id, "Ana de novo", "G3", ANA, "Ana")
    responder.answer_conversation(group_id, owner="test")  # one reply to Bruno and Ana
    with session_scope() as session:
        token_before = session.get(Conversation, group_id).lease_token

    with session_scope() as session:
        counts = privacy.erase_contact(session, privacy.parse_contact(ANA), actor="test")

    assert counts["group_messages"] == 2 and counts["conversations"] == 0
    with session_scope() as session:
        left = session.scalars(select(Message.content).where(
            Message.conversation_id == group_id).order_by(Message.id)).all()
        conversation = session.get(Conversation, group_id)
    # The reply to Ana alone goes (it repeats her words); the one the group got for Bruno's
    # question too stays, as the group's.
    assert left == ["e o meu pedido?", 'Resposta: ["Bruno"] e o meu pedido? | ["Ana"] Ana de novo']
    assert "Rua A" not in everything()
    assert conversation.lease_token == token_before + 1


def test_a_reply_task_for_an_erased_conversation_ends_instead_of_waiting_for_it(db, wuzapi):
    conversation_id = receive(make_config(wuzapi), "oi", "R1")
    with session_scope() as session:
        privacy.erase_contact(session, privacy.parse_contact(ANA), actor="test")

    assert responder.answer_conversation(conversation_id, owner="test") == 0
    assert wuzapi.sent() == []


# Retention.


def backdate(model, days: float, **where) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        statement = update(model).values(created_at=utcnow() - timedelta(days=days))
        for name, value in where.items():
            statement = statement.where(getattr(model, name) == value)
        session.execute(statement)


def test_retention_deletes_messages_and_events_past_the_configs_days_and_keeps_the_rest(
    db, llm, wuzapi
):
    config_id = make_config(wuzapi, options={"retention_days": 30})
    old = receive(config_id, "mensagem antiga", "O1")
    responder.answer_conversation(old, owner="test")
    for model in (Message, Event, ReplyRun):
        backdate(model, 31)
    with session_scope() as session:
        session.execute(update(Conversation).values(updated_at=utcnow() - timedelta(days=31)))
    recent = receive(config_id, "mensagem nova", "N1", phone=BRUNO, name="Bruno")

    summaries = privacy.purge_expired()

    with session_scope() as session:
        assert session.scalars(select(Message.content)).all() == ["mensagem nova"]
        assert session.scalars(select(Conversation.id)).all() == [recent]
        assert session.scalar(select(func.count()).select_from(ReplyRun)) == 0
        purged = session.scalars(select(Event).where(Event.type == "retention.purged")).one()
    assert summaries == [purged.payload]
    assert purged.payload["workflow_config_id"] == config_id
    assert purged.payload["retention_days"] == 30
    assert {k: purged.payload[k] for k in ("messages", "events", "runs", "conversations")} == {
        "messages": 2, "events": 3, "runs": 1, "conversations": 1}
    assert ANA not in json.dumps(purged.payload) and "antiga" not in json.dumps(purged.payload)


def test_the_default_retention_is_180_days(db, wuzapi):
    config_id = make_config(wuzapi)
    receive(config_id, "de 179 dias", "K1")
    receive(config_id, "de 181 dias", "K2")
    backdate(Message, 179, wa_message_id="K1")
    backdate(Message, 181, wa_message_id="K2")

    privacy.purge_expired()

    with session_scope() as session:
        assert session.scalars(select(Message.content)).all() == ["de 179 dias"]


def test_retention_null_keeps_everything_forever(db, wuzapi):
    config_id = make_config(wuzapi, options={"retention_days": None})
    receive(config_id, "de 10 anos", "F1")
    backdate(Message, 3650)
    backdate(Event, 3650)

    assert privacy.purge_expired() == []
    assert count(Message) == 1 and count(Event) == 1


def test_an_emptied_conversation_is_deleted_unless_someone_paused_it(db, wuzapi):
    config_id = make_config(wuzapi, options={"retention_days": 7})
    emptied = receive(config_id, "oi", "P1")
    paused = receive(config_id, "oi", "P2", phone=BRUNO, name="Bruno")
    with session_scope() as session:
        session.execute(update(Conversation).where(Conversation.id == paused).values(
            status="paused", paused_until=None, pause_reason="human took over"))
    for model in (Message, Event):
        backdate(model, 8)
    with session_scope() as session:
        session.execute(update(Conversation).values(updated_at=utcnow() - timedelta(days=8)))

    privacy.purge_expired()

    with session_scope() as session:
        assert session.scalars(select(Conversation.id)).all() == [paused]
    assert emptied != paused


def test_an_open_run_and_its_conversation_outlive_the_retention(db, wuzapi):
    config_id = make_config(wuzapi, options={"retention_days": 1})
    conversation_id = receive(config_id, "oi", "Q1")
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, workflow_config_id=config_id,
                       status="running", attempts=0)
        session.add(run)
    backdate(ReplyRun, 5)
    backdate(Message, 5)
    with session_scope() as session:
        session.execute(update(Conversation).values(updated_at=utcnow() - timedelta(days=5)))

    privacy.purge_expired()

    assert count(ReplyRun) == 1 and count(Conversation) == 1 and count(Message) == 0


def test_a_backlog_is_deleted_in_transactions_of_the_batch_size(db, wuzapi):
    config_id = make_config(wuzapi, options={"retention_days": 1})
    for n in range(10):
        receive(config_id, f"mensagem {n}", f"B{n}")
    backdate(Message, 2)
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("DELETE FROM messages"):
            statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", seen)
    try:
        summaries = privacy.purge_expired(batch_size=3)
    finally:
        event.remove(get_engine(), "before_cursor_execute", seen)

    assert summaries[0]["messages"] == 10
    assert len(statements) == 4  # 3 + 3 + 3 + 1, each its own transaction
    assert count(Message) == 0


def test_retention_days_must_be_at_least_one_day():
    for bad in (0, -1, 36501, 1.5, "30", True):
        with pytest.raises(configs.InvalidConfig):
            configs.validate({"name": "L", "instance": "l", "model": "m",
                              "send": {"driver": "wuzapi", "base_url": "http://w", "token": "t"},
                              "options": {"retention_days": bad}})
    assert configs.validate({"name": "L", "instance": "l", "model": "m",
                             "send": {"driver": "wuzapi", "base_url": "http://w", "token": "t"},
                             "options": {"retention_days": None}})["options"] == {
        "retention_days": None}


# The CLI.


def test_the_cli_prints_a_contacts_export_as_json(db, wuzapi, capsys):
    receive(make_config(wuzapi), "oi pelo terminal", "C1")

    assert cli.main(["contact", "export", "+55 (11) 90000-0001"]) == 0

    data = json.loads(capsys.readouterr().out)
    assert data["conversations"][0]["messages"][0]["content"] == "oi pelo terminal"


def test_the_cli_erases_only_when_told_yes(db, wuzapi, capsys):
    receive(make_config(wuzapi), "apague-me", "C2")

    assert cli.main(["contact", "erase", ANA]) == 2
    assert "--yes" in capsys.readouterr().err
    assert count(Conversation) == 1

    assert cli.main(["contact", "erase", ANA, "--yes"]) == 0
    assert json.loads(capsys.readouterr().out)["erased"]["messages"] == 1
    assert count(Conversation) == 0 and count(Message) == 0
    with session_scope() as session:
        assert session.scalars(select(Event.payload)).one()["actor"] == "cli"


def test_the_cli_says_what_is_wrong_with_a_phone_and_when_nothing_is_known(db, capsys):
    assert cli.main(["contact", "export", "not-a-phone"]) == 2
    assert "phone number" in capsys.readouterr().err
    assert cli.main(["contact", "erase", BRUNO, "--yes"]) == 1
    assert "nothing is stored" in capsys.readouterr().err
