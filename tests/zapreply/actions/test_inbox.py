"""The inbox's filters, search and keyset paging (zapreply.actions.inbox), with the same
answers on PostgreSQL (trigram indexes) and SQLite (scans)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.factories import make_config
from zapreply.actions import inbox
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun, utcnow

NOW = utcnow()


def conversation(name: str | None, *, phone: str, texts: tuple[str, ...] = (),
                 minutes_ago: float = 0, at: datetime | None = None, instance: str = "loja-a",
                 config_id: int | None = None, **columns: Any) -> int:
    with session_scope() as session:
        row = Conversation(instance=instance, chat_jid=f"{phone}@s.whatsapp.net",
                           contact_phone=phone, contact_name=name, workflow_config_id=config_id,
                           lease_token=0, **{"status": "active", **columns})
        session.add(row)
        session.flush()
        for index, text in enumerate(texts):
            session.add(Message(conversation_id=row.id, instance=instance, role="customer",
                                content=text, wa_message_id=f"W{row.id}-{index}"))
        session.flush()
        row.updated_at = at or NOW - timedelta(minutes=minutes_ago)
        return row.id


def runs(conversation_id: int, *statuses: str) -> None:
    with session_scope() as session:
        for status in statuses:
            session.add(ReplyRun(conversation_id=conversation_id, status=status, attempts=1))
            session.flush()


def names(**arguments: Any) -> list[str | None]:
    with session_scope() as session:
        page = inbox.list_inbox(session, now=NOW, **arguments)
        return [row.conversation.contact_name for row in page.rows]


def every_page(limit: int, **arguments: Any) -> list[str | None]:
    """Names of every page from the first, following each page's cursor."""
    seen: list[str | None] = []
    before = None
    with session_scope() as session:
        while True:
            page = inbox.list_inbox(session, now=NOW, before=before, limit=limit, **arguments)
            seen += [row.conversation.contact_name for row in page.rows]
            if page.next_cursor is None:
                return seen
            before = inbox.parse_cursor(page.next_cursor)


def test_a_search_matches_names_numbers_and_message_text_whatever_the_case(database):
    conversation("Bruna Souza", phone="5511900000001", texts=("oi",), minutes_ago=1)
    conversation("PAULO", phone="5511900000002", texts=("Quero TROCAR o tamanho",),
                 minutes_ago=2)
    conversation(None, phone="5511900000003", texts=("bom dia",), minutes_ago=3)
    conversation("Trocadilho Lima", phone="5511900000004", minutes_ago=4)

    assert names(search="SOUZA") == ["Bruna Souza"]
    assert names(search="paulo") == ["PAULO"]
    assert names(search="troca") == ["PAULO", "Trocadilho Lima"]  # text, then a name
    assert names(search="90000-0003") == [None]  # digits anywhere in the number
    assert names(search="nada disso") == []


def test_a_conversation_matching_by_name_and_by_text_is_listed_once(database):
    conversation("Ana Troca", phone="5511900000001", texts=("troca", "troca de novo"))
    assert names(search="troca") == ["Ana Troca"]


def test_percent_and_underscore_in_a_search_are_plain_characters(database):
    conversation("A", phone="5511900000001", texts=("50% de desconto",), minutes_ago=1)
    conversation("B", phone="5511900000002", texts=("500 de desconto",), minutes_ago=2)
    conversation("C", phone="5511900000003", texts=("codigo a_b",), minutes_ago=3)
    conversation("D", phone="5511900000004", texts=("codigo axb",), minutes_ago=4)
    assert names(search="50%") == ["A"]
    assert names(search="a_b") == ["C"]
    assert names(search="\\") == []


def test_a_search_pages_by_keyset_through_matches_by_name_and_by_text(database):
    for n in range(9):
        # Every third matches by its name, the others by a message; two share a moment.
        at = NOW - timedelta(minutes=n if n != 5 else 4)
        conversation(f"Troca {n}" if n % 3 == 0 else f"C{n}", phone=f"55119000000{n:02d}",
                     texts=("oi",) if n % 3 == 0 else ("uma troca",), at=at)
    conversation("Outro", phone="5511900000099", texts=("oi",))
    found = every_page(2, search="troca")
    assert sorted(found) == sorted(["Troca 0", "C1", "C2", "Troca 3", "C4", "C5", "Troca 6",
                                    "C7", "C8"])
    assert found[:4] == ["Troca 0", "C1", "C2", "Troca 3"]


def test_every_filter_pages_through_rows_of_the_same_moment_without_repeats_or_gaps(database):
    first = make_config(instance="loja-a")
    second = make_config(instance="loja-b")
    moment = NOW - timedelta(minutes=5)
    for n in range(7):
        conversation(f"A{n}", phone=f"55119000001{n:02d}", at=moment, config_id=first)
        conversation(f"B{n}", phone=f"55119000002{n:02d}", at=moment, instance="loja-b",
                     config_id=second)
    everyone = every_page(3)
    assert len(everyone) == len(set(everyone)) == 14
    assert every_page(3, config_id=first) == [f"A{n}" for n in reversed(range(7))]
    assert every_page(4, instance="loja-b") == [f"B{n}" for n in reversed(range(7))]


def test_states_filter_paused_handoff_failed_and_bot(database):
    conversation("bot", phone="5511900000001", minutes_ago=1)
    conversation("paused", phone="5511900000002", minutes_ago=2, status="paused",
                 paused_until=NOW + timedelta(minutes=30), pause_reason="taken over")
    conversation("handoff", phone="5511900000003", minutes_ago=3, status="paused",
                 pause_reason=inbox.HANDOFF_REASON)
    conversation("pause over", phone="5511900000004", minutes_ago=4, status="paused",
                 paused_until=NOW - timedelta(minutes=1), pause_reason="taken over")
    runs(conversation("failed", phone="5511900000005", minutes_ago=5), "sent", "failed")
    runs(conversation("failed, then sent", phone="5511900000006", minutes_ago=6),
         "failed", "sent")

    assert names(state=inbox.State.PAUSED) == ["paused"]
    assert names(state=inbox.State.HANDOFF) == ["handoff"]
    assert names(state=inbox.State.FAILED) == ["failed"]
    assert names(state=inbox.State.BOT) == ["bot", "pause over", "failed",
                                            "failed, then sent"]
    assert names(state=inbox.State.FAILED, search="fail") == ["failed"]
    with session_scope() as session:
        rows = inbox.list_inbox(session, now=NOW).rows
    assert {row.conversation.contact_name for row in rows if row.failed} == {"failed"}
