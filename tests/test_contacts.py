"""One contact across LID and phone addressing, and contact memory, through the running receiver
and a real worker, on PostgreSQL and on SQLite: a message carrying both addresses pairs them,
either address finds the person's one conversation, split conversations are merged by the
admin API, the model's remember tool keeps notes it sees in a later session, and the contact's
erasure takes the notes and the pair with it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN, fixture_json, running_worker, wait_until_idle
from tests.e2e import events_of, post, wait_for
from tests.factories import INSTANCE, make_config
from tests.processes import Receiver, free_port
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import ContactAddress, Conversation, Message

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LID = "100000000000777@lid"
PHONE = "5511900000777@s.whatsapp.net"


@contextmanager
def running_system(base_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    """A receiver and a worker on the test's database (PostgreSQL, or a fresh SQLite file)."""
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        with running_worker(base_env, tmp_path_factory, name="contacts",
                            DATABASE_URL=env["DATABASE_URL"]):
            yield receiver.url
            wait_until_idle()
    finally:
        receiver.stop()


def says(receiver: str, text: str, *, chat: str, alt: str = "") -> None:
    """The customer writes; WuzAPI addresses the chat by `chat`, with `alt` as SenderAlt."""
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=chat,
                                 Sender=chat, SenderAlt=alt,
                                 AddressingMode="lid" if chat.endswith("@lid") else "pn")
    body["event"]["Message"] = {"conversation": text}
    answer = post(receiver, json.dumps(body).encode())
    assert answer.json()["status"] == "queued", answer.text


def conversations() -> list[tuple[int, str, str | None]]:
    with session_scope() as session:
        return [(c.id, c.chat_jid, c.contact_phone) for c in session.scalars(
            select(Conversation).order_by(Conversation.id))]


def pairs() -> list[tuple[str, str, str]]:
    with session_scope() as session:
        return [(p.instance, p.lid_jid, p.phone_jid) for p in session.scalars(
            select(ContactAddress))]


@pytest.mark.usefixtures("database")
def test_either_address_reaches_one_conversation_and_split_ones_are_merged(
    base_env, tmp_path_factory, wuzapi, llm
):
    with running_system(base_env, tmp_path_factory) as receiver:
        make_config(wuzapi.url)
        # Nothing pairs the two addresses yet: two conversations.
        says(receiver, "primeira pelo lid", chat=LID)
        wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
        says(receiver, "segunda pelo número", chat=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=30)
        [(lid_id, _, no_phone), (phone_id, _, _)] = conversations()
        assert no_phone is None

        # A message carrying both pairs them and lands in the older conversation; the reply
        # goes to the phone's JID now that the number is known.
        says(receiver, "terceira com os dois", chat=LID, alt=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 3, timeout=30)
        assert pairs() == [(INSTANCE, LID, PHONE)]
        assert [r["body"]["Phone"] for r in wuzapi.sent()] == [LID, PHONE, PHONE]

        bad = httpx.post(f"{receiver}/api/contacts/merge-split", headers=ADMIN,
                         json={"instance": 5})
        assert bad.status_code == 400 and "instance" in bad.json()["error"]
        merged = httpx.post(f"{receiver}/api/contacts/merge-split", headers=ADMIN, json={})
        assert merged.status_code == 200, merged.text
        assert merged.json() == {"busy": [], "merged": [{
            "conversation_id": lid_id, "merged_conversation_id": phone_id,
            "messages": 2, "runs": 1, "events": merged.json()["merged"][0]["events"]}]}
        again = httpx.post(f"{receiver}/api/contacts/merge-split", headers=ADMIN)
        assert again.json() == {"busy": [], "merged": []}
        assert conversations() == [(lid_id, LID, "5511900000777")]
        [event] = events_of("contact.merged")
        assert (event.conversation_id, event.payload["merged_conversation_id"]) == (
            lid_id, phone_id)

        # A message by the number alone finds the pair, and the model sees one history.
        says(receiver, "quarta pelo número", chat=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 4, timeout=30)
        assert wuzapi.sent()[-1]["body"]["Phone"] == PHONE
    seen = [m["content"] for m in llm.chat_requests()[-1]["body"]["messages"]
            if m["role"] == "user"]
    assert seen == ["primeira pelo lid", "segunda pelo número", "terceira com os dois",
                    "quarta pelo número"]
    with session_scope() as session:
        assert {m.conversation_id for m in session.scalars(select(Message))} == {lid_id}


@pytest.mark.usefixtures("database")
def test_a_person_first_seen_with_both_addresses_by_two_workers_at_once_is_one_conversation(
    base_env, tmp_path_factory, wuzapi, llm
):
    with running_system(base_env, tmp_path_factory) as receiver:
        make_config(wuzapi.url, debounce_seconds=1.0)
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda n: says(receiver, f"mensagem {n}",
                                         chat=LID if n % 2 else PHONE,
                                         alt=PHONE if n % 2 else LID), range(6)))
        wait_for(lambda: len(events_of("message.received")) == 6, timeout=30)
    assert pairs() == [(INSTANCE, LID, PHONE)]
    assert len(conversations()) == 1


def notes_url(receiver: str, contact: str = "+55 11 90000-0777",
              instance: str | None = INSTANCE) -> str:
    query = f"?instance={instance}" if instance else ""
    return f"{receiver}/api/contacts/{contact}/notes{query}"


@pytest.mark.usefixtures("database")
def test_the_model_remembers_a_fact_and_sees_the_notes_in_a_later_session(
    base_env, tmp_path_factory, wuzapi, llm
):
    with running_system(base_env, tmp_path_factory) as receiver:
        make_config(wuzapi.url, options={"contact_memory": True})
        says(receiver, '#call remember {"fact": "prefere entrega à tarde"}', chat=LID,
             alt=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
        too_long = "x" * 301
        says(receiver, '#call remember {"fact": "' + too_long + '"}', chat=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=30)
        remembered = [e.payload for e in events_of("tool.called")]
        assert [(p["name"], p["result"][:13]) for p in remembered] == [
            ("remember", "ok: noted for"), ("remember", "error: not no")]
        assert wuzapi.sent()[1]["body"]["Body"] == "Não consegui consultar agora, desculpe."

        # Found by the number, by its LID, or by its phone's JID.
        for contact in ("5511900000777", LID, PHONE):
            shown = httpx.get(notes_url(receiver, contact), headers=ADMIN)
            assert shown.status_code == 200, shown.text
            assert shown.json()["facts"] == ["prefere entrega à tarde"]
        assert httpx.get(notes_url(receiver, instance=None), headers=ADMIN).status_code == 400
        assert httpx.get(notes_url(receiver, "abc"), headers=ADMIN).status_code == 400
        assert httpx.get(notes_url(receiver, "5511900000123"), headers=ADMIN).status_code \
            == 404
        assert httpx.put(notes_url(receiver), headers=ADMIN,
                         json={"notes": 5}).status_code == 400
        assert httpx.put(notes_url(receiver), headers=ADMIN,
                         json={"notes": "x" * 4001}).status_code == 400
        assert httpx.put(notes_url(receiver), headers=ADMIN, json={}).status_code == 400
        edited = httpx.put(notes_url(receiver), headers=ADMIN, json={
            "notes": "prefere entrega à tarde\n\ncliente VIP"})
        assert edited.status_code == 200, edited.text
        assert edited.json()["facts"] == ["prefere entrega à tarde", "cliente VIP"]

        # Two days later: a new session, the earlier messages no longer shown, the notes are.
        with session_scope() as session:
            for message in session.scalars(select(Message)):
                message.created_at -= timedelta(days=2)
        says(receiver, "oi de novo", chat=PHONE)
        wuzapi.wait_for(lambda sent: len(sent) >= 3, timeout=30)
    request = llm.chat_requests()[-1]["body"]
    system, *rest = request["messages"]
    assert system["content"].endswith(
        '- "prefere entrega à tarde"\n- "cliente VIP"'), system["content"]
    assert [m["content"] for m in rest] == ["oi de novo"]
    assert "remember" in [t["function"]["name"] for t in request["tools"]]


@pytest.mark.usefixtures("database")
def test_the_contacts_export_and_erasure_cover_both_addresses_the_pair_and_the_notes(
    base_env, tmp_path_factory, wuzapi, llm
):
    with running_system(base_env, tmp_path_factory) as receiver:
        make_config(wuzapi.url, options={"contact_memory": True})
        says(receiver, '#call remember {"fact": "mora em Campinas"}', chat=PHONE, alt=LID)
        wuzapi.wait_for(lambda sent: len(sent) >= 1, timeout=30)
        wait_until_idle()

        exported = httpx.get(f"{receiver}/api/contacts/{LID}/export", headers=ADMIN)
        assert exported.status_code == 200, exported.text
        [conversation] = exported.json()["conversations"]
        assert (conversation["chat_jid"], conversation["notes"]) == (PHONE, "mora em Campinas")
        assert [(a["lid_jid"], a["phone_jid"]) for a in exported.json()["addresses"]] == [
            (LID, PHONE)]

        erased = httpx.delete(f"{receiver}/api/contacts/{LID}", headers=ADMIN)
        assert erased.status_code == 200, erased.text
        assert (erased.json()["erased"]["conversations"],
                erased.json()["erased"]["addresses"]) == (1, 1)
    assert conversations() == [] and pairs() == []
