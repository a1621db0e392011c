"""The admin API's personal-data routes: `GET /api/contacts/<phone>/export` and
`DELETE /api/contacts/<phone>`."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from zapreply.replies import inbound
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message, WorkflowConfig

PHONE = "5511900000001"


@pytest.fixture
def ana(db) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        config = WorkflowConfig(name="Loja", instance="loja", model="openai/stub",
                                send={"driver": "wuzapi", "base_url": "http://w", "token": "t"},
                                debounce_seconds=0.0, options={})
        session.add(config)
        session.flush()
        recorded = inbound.record_inbound(session, config_id=config.id, instance="loja", message={
            "wa_message_id": "A1", "chat_jid": f"{PHONE}@s.whatsapp.net",
            "sender_jid": f"{PHONE}@s.whatsapp.net", "contact_phone": PHONE,
            "push_name": "Ana", "from_me": False, "timestamp": None,
            "text": "meu pedido 123", "media_type": None,
        })
    return recorded.conversation_id


@pytest.mark.parametrize("phone", [
    "+55 11 90000-0001", PHONE, f"{PHONE}@s.whatsapp.net",
])
def test_a_contact_is_exported_by_formatted_number_digits_or_jid(client, admin_headers, ana,
                                                                 phone):
    response = client.get(f"/api/contacts/{quote(phone)}/export", headers=admin_headers)

    assert response.status_code == 200
    data = response.get_json()
    [conversation] = data["conversations"]
    assert conversation["id"] == ana
    assert conversation["contact_name"] == "Ana"
    assert [m["content"] for m in conversation["messages"]] == ["meu pedido 123"]
    assert [e["type"] for e in conversation["events"]] == ["message.received"]


def test_an_unknown_contact_is_404_on_export_and_erasure(client, admin_headers, ana):
    for method in (client.get, client.delete):
        path = "/api/contacts/5511999999999" + ("/export" if method == client.get else "")
        response = method(path, headers=admin_headers)
        assert response.status_code == 404
        assert response.get_json() == {"error": "nothing is stored about this contact"}


@pytest.mark.parametrize("phone", ["abc", "123", "1234567890123456", "120363000000000001@g.us",
                                   "5511%00900000001"])
def test_a_malformed_phone_is_400_with_the_reason(client, admin_headers, ana, phone):
    for response in (client.get(f"/api/contacts/{phone}/export", headers=admin_headers),
                     client.delete(f"/api/contacts/{phone}", headers=admin_headers)):
        assert response.status_code == 400
        assert "error" in response.get_json()
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_erasure_answers_the_counts_and_leaves_only_its_own_event(client, admin_headers, ana):
    response = client.delete(f"/api/contacts/{quote('+55 11 90000-0001')}",
                             headers=admin_headers)

    assert response.status_code == 200
    assert response.get_json() == {"erased": {
        "conversations": 1, "messages": 1, "events": 1, "runs": 0, "group_messages": 0,
        "addresses": 0}}
    with session_scope() as session:
        assert session.scalars(select(Conversation)).all() == []
        [erased] = session.scalars(select(Event)).all()
    assert erased.type == "contact.erased"
    assert erased.payload["actor"] == "admin"
    assert client.get(f"/api/contacts/{PHONE}/export", headers=admin_headers).status_code == 404


def test_the_contact_routes_need_the_admin_token(client, ana):
    wrong = {"Authorization": "Bearer not-the-token"}
    for response in (client.get(f"/api/contacts/{PHONE}/export"),
                     client.get(f"/api/contacts/{PHONE}/export", headers=wrong),
                     client.delete(f"/api/contacts/{PHONE}", headers=wrong)):
        assert response.status_code == 401
        assert PHONE not in response.get_data(as_text=True)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1
