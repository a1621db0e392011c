from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from zapreply.rules import conversations
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, WorkflowConfig, utcnow

SECRET = "user-token-s3cret"


def config_body(**changes: Any) -> dict[str, Any]:
    return {
        "name": "Loja",
        "instance": "loja-teste",
        "is_active": True,
        "model": "openai/gpt-4o-mini",
        "system_prompt": "Você é o atendente da Loja.",
        "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": SECRET},
        "debounce_seconds": 2.0,
        **changes,
    }


def create_config(client, admin_headers, **changes: Any) -> dict[str, Any]:
    response = client.post("/api/workflow-configs", json=config_body(**changes),
                           headers=admin_headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def stored_send(config_id: int) -> dict[str, Any]:
    with session_scope() as session:
        return dict(session.get(WorkflowConfig, config_id).send)


def make_conversation(chat: str = "5511999990001", instance: str = "loja-teste",
                      **fields: Any) -> int:
    with session_scope() as session:
        conversation = Conversation(instance=instance, chat_jid=f"{chat}@s.whatsapp.net",
                                    contact_phone=chat, **fields)
        session.add(conversation)
        session.flush()
        return conversation.id


def add_event(type: str, conversation_id: int | None = None, **payload: Any) -> int:
    with session_scope() as session:
        event = Event(type=type, conversation_id=conversation_id, payload=payload)
        session.add(event)
        session.flush()
        return event.id


# Authentication.


def test_it_answers_503_when_admin_token_is_unset(db, base_env) -> None:
    from webhook_app import create_app

    client = create_app({**base_env, "ADMIN_TOKEN": ""}).test_client()

    response = client.get("/api/workflow-configs", headers={"Authorization": "Bearer x"})

    assert response.status_code == 503
    assert response.get_json() == {"error": "admin API disabled: set ADMIN_TOKEN"}


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="},
    {"Authorization": "test-admin-token"},
    {"Authorization": "Bearer test-admin-token-and-more"},
    {"Authorization": "Bearer tést"},
])
def test_it_rejects_a_missing_or_wrong_token(client, headers) -> None:
    response = client.get("/api/conversations", headers=headers)

    assert response.status_code == 401
    assert response.get_json() == {"error": "missing or invalid bearer token"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_it_rejects_writes_without_a_token_before_reading_the_body(client) -> None:
    response = client.post("/api/workflow-configs", json=config_body())

    assert response.status_code == 401
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []


def test_it_accepts_the_scheme_in_any_case(client) -> None:
    response = client.get("/api/events", headers={"Authorization": "bearer test-admin-token"})

    assert response.status_code == 200


# Workflow configs.


def test_it_creates_a_workflow_config_and_masks_its_token(client, admin_headers) -> None:
    response = client.post("/api/workflow-configs", json=config_body(), headers=admin_headers)

    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/workflow-configs/{body['id']}"
    assert body["send"] == {"driver": "wuzapi", "base_url": "http://wuzapi:8080",
                            "token": "********"}
    assert body["name"] == "Loja"
    assert body["instance"] == "loja-teste"
    assert body["is_active"] is True
    assert body["debounce_seconds"] == 2.0
    assert body["options"]["human_pause_minutes"] == 30.0
    assert SECRET not in response.get_data(as_text=True)
    assert stored_send(body["id"])["token"] == SECRET


def test_it_fills_defaults_for_optional_fields(client, admin_headers) -> None:
    body = config_body()
    del body["is_active"], body["system_prompt"], body["debounce_seconds"]

    response = client.post("/api/workflow-configs", json=body, headers=admin_headers)

    assert response.status_code == 201
    created = response.get_json()
    assert (created["is_active"], created["system_prompt"], created["debounce_seconds"]) == (
        True, "", 2.0)
    assert created["created_at"] and created["updated_at"]


def test_it_never_returns_the_token_on_any_read(client, admin_headers) -> None:
    created = create_config(client, admin_headers)
    create_config(client, admin_headers, name="Outra", instance="outra",
                  send={"driver": "livchat", "base_url": "https://livchat.example",
                        "token": SECRET})

    responses = [
        client.get("/api/workflow-configs", headers=admin_headers),
        client.get(f"/api/workflow-configs/{created['id']}", headers=admin_headers),
        client.patch(f"/api/workflow-configs/{created['id']}", json={"name": "Loja 2"},
                     headers=admin_headers),
    ]

    for response in responses:
        assert response.status_code == 200
        assert SECRET not in response.get_data(as_text=True)


def test_it_lists_workflow_configs_in_creation_order(client, admin_headers) -> None:
    first = create_config(client, admin_headers)
    second = create_config(client, admin_headers, name="Outra", instance="outra")

    response = client.get("/api/workflow-configs", headers=admin_headers)

    assert response.status_code == 200
    assert [c["id"] for c in response.get_json()["workflow_configs"]] == [first["id"],
                                                                          second["id"]]


def test_it_filters_workflow_configs_by_instance(client, admin_headers) -> None:
    create_config(client, admin_headers)
    other = create_config(client, admin_headers, name="Outra", instance="outra")

    response = client.get("/api/workflow-configs?instance=outra", headers=admin_headers)

    assert [c["id"] for c in response.get_json()["workflow_configs"]] == [other["id"]]


def test_it_gets_one_workflow_config(client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    response = client.get(f"/api/workflow-configs/{created['id']}", headers=admin_headers)

    assert response.status_code == 200
    assert response.get_json() == created


def test_it_patches_only_the_fields_given(client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    response = client.patch(
        f"/api/workflow-configs/{created['id']}",
        json={"is_active": False, "debounce_seconds": 0, "fallback_text": "Já volto"},
        headers=admin_headers,
    )

    assert response.status_code == 200
    body = response.get_json()
    assert (body["is_active"], body["debounce_seconds"]) == (False, 0.0)
    assert body["options"]["fallback_text"] == "Já volto"
    assert (body["name"], body["model"], body["instance"]) == (
        created["name"], created["model"], created["instance"])
    fetched = client.get(f"/api/workflow-configs/{created['id']}", headers=admin_headers)
    assert fetched.get_json() == body


def test_patching_with_the_masked_token_keeps_the_stored_one(client, admin_headers) -> None:
    created = create_config(client, admin_headers)
    send = {**created["send"], "base_url": "http://WUZAPI:8080/api"}
    assert send["token"] == "********"

    response = client.patch(f"/api/workflow-configs/{created['id']}", json={"send": send},
                            headers=admin_headers)

    assert response.status_code == 200
    assert response.get_json()["send"]["base_url"] == "http://WUZAPI:8080/api"
    assert stored_send(created["id"]) == {"driver": "wuzapi", "base_url": "http://WUZAPI:8080/api",
                                          "token": SECRET}


def test_patching_part_of_send_keeps_the_rest(client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    response = client.patch(f"/api/workflow-configs/{created['id']}",
                            json={"send": {"base_url": "http://wuzapi:8080/v2/"}},
                            headers=admin_headers)

    assert response.status_code == 200
    assert stored_send(created["id"]) == {"driver": "wuzapi", "base_url": "http://wuzapi:8080/v2",
                                          "token": SECRET}


@pytest.mark.parametrize("send", [
    {"driver": "wuzapi", "base_url": "http://attacker.example:8080", "token": "********"},
    {"base_url": "http://attacker.example:8080"},
    {"base_url": "https://wuzapi:8080"},  # the scheme is part of where it goes
    {"base_url": "http://wuzapi:8081"},
])
def test_moving_send_to_another_host_without_the_token_is_refused(
        client, admin_headers, send) -> None:
    created = create_config(client, admin_headers)

    response = client.patch(f"/api/workflow-configs/{created['id']}", json={"send": send},
                            headers=admin_headers)

    assert response.status_code == 400
    assert "give the token again when changing the host" in response.get_json()["error"]
    assert stored_send(created["id"]) == {"driver": "wuzapi", "base_url": "http://wuzapi:8080",
                                          "token": SECRET}


def test_moving_send_to_another_host_with_the_token_given_again_is_accepted(
        client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    response = client.patch(f"/api/workflow-configs/{created['id']}",
                            json={"send": {"base_url": "http://wuzapi-2:8080", "token": SECRET}},
                            headers=admin_headers)

    assert response.status_code == 200
    assert stored_send(created["id"]) == {"driver": "wuzapi", "base_url": "http://wuzapi-2:8080",
                                          "token": SECRET}


def test_moving_a_tool_to_another_host_with_its_headers_masked_is_refused(
        client, admin_headers) -> None:
    tool = {"name": "pedido", "description": "Consulta um pedido.",
            "url": "https://loja.example/p/{id}", "headers": {"Authorization": "Bearer s3cr3t"},
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}
    created = create_config(client, admin_headers, tools=[tool])
    [shown] = created["options"]["tools"]
    assert shown["headers"] == {"Authorization": "********"}

    moved = client.patch(f"/api/workflow-configs/{created['id']}", headers=admin_headers,
                         json={"tools": [{**shown, "url": "https://attacker.example/p/{id}"}]})
    same_host = client.patch(f"/api/workflow-configs/{created['id']}", headers=admin_headers,
                             json={"tools": [{**shown, "url": "https://loja.example/v2/{id}"}]})

    assert moved.status_code == 400
    assert "give header 'Authorization' again when changing the host" in moved.get_json()["error"]
    assert same_host.status_code == 200
    with session_scope() as session:
        [stored] = session.get(WorkflowConfig, created["id"]).options["tools"]
    assert (stored["url"], stored["headers"]) == (
        "https://loja.example/v2/{id}", {"Authorization": "Bearer s3cr3t"})


def test_patching_a_new_token_replaces_it_and_still_masks_it(client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    response = client.patch(f"/api/workflow-configs/{created['id']}",
                            json={"send": {"token": "new-token-value"}}, headers=admin_headers)

    assert response.status_code == 200
    assert response.get_json()["send"]["token"] == "********"
    assert "new-token-value" not in response.get_data(as_text=True)
    assert stored_send(created["id"])["token"] == "new-token-value"


def test_it_refuses_to_create_a_config_with_the_masked_token(client, admin_headers) -> None:
    body = config_body(send={"driver": "wuzapi", "base_url": "http://w:8080",
                             "token": "********"})

    response = client.post("/api/workflow-configs", json=body, headers=admin_headers)

    assert response.status_code == 400
    assert "send.token" in response.get_json()["error"]


def test_it_deletes_a_workflow_config(client, admin_headers) -> None:
    created = create_config(client, admin_headers)
    conversation_id = make_conversation(workflow_config_id=created["id"])

    response = client.delete(f"/api/workflow-configs/{created['id']}", headers=admin_headers)

    assert response.status_code == 204
    assert response.get_data() == b""
    again = client.get(f"/api/workflow-configs/{created['id']}", headers=admin_headers)
    assert again.status_code == 404
    # The conversation and its history stay; only the link goes.
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).workflow_config_id is None


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_it_answers_404_for_an_unknown_workflow_config(client, admin_headers, method) -> None:
    response = getattr(client, method)("/api/workflow-configs/999", json={},
                                       headers=admin_headers)

    assert response.status_code == 404
    assert response.get_json() == {"error": "workflow config 999 not found"}


@pytest.mark.parametrize("body, message", [
    ({k: v for k, v in config_body().items() if k != "name"}, "'name' is required"),
    (config_body(name=""), "'name' must be a non-empty string"),
    (config_body(model=7), "'model' must be a non-empty string"),
    (config_body(is_active="yes"), "'is_active' must be true or false"),
    (config_body(debounce_seconds=-1), "'debounce_seconds'"),
    (config_body(send={"driver": "sms", "base_url": "http://w", "token": "t"}), "send.driver"),
    (config_body(send={"driver": "wuzapi", "base_url": "ftp://w", "token": "t"}),
     "send.base_url"),
    (config_body(send={"driver": "wuzapi", "base_url": "http://w"}), "send.token"),
    (config_body(send="http://w"), "'send' must be an object"),
    (config_body(colour="blue"), "unknown field(s): colour"),
    (config_body(options={"temperature": "hot"}), "option 'temperature'"),
    (config_body(name="x" * 201), "'name' must be at most 200 characters"),
    (config_body(name="Lo\u0000ja"), "NUL"),
    ([config_body()], "body must be a JSON object"),
    ("Loja", "body must be a JSON object"),
    (None, "body must be a JSON object"),
])
def test_it_rejects_an_invalid_config_with_a_clear_message(
    client, admin_headers, body, message
) -> None:
    response = client.post("/api/workflow-configs", json=body, headers=admin_headers)

    assert response.status_code == 400
    assert message in response.get_json()["error"]
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []


@pytest.mark.parametrize("data, content_type", [
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b"name=Loja&instance=x", "application/x-www-form-urlencoded"),
    (b'{"name": "Loja", "debounce_seconds": NaN}', "application/json"),
    (b"\xff\xfe\xfa", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b'{"name": "\\ud800"}', "application/json"),
])
def test_it_rejects_a_body_that_is_not_json(client, admin_headers, data, content_type) -> None:
    response = client.post("/api/workflow-configs", data=data, content_type=content_type,
                           headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["error"]


def test_it_rejects_an_invalid_patch_and_keeps_the_config(client, admin_headers) -> None:
    created = create_config(client, admin_headers)

    responses = [
        client.patch(f"/api/workflow-configs/{created['id']}", json=body, headers=admin_headers)
        for body in ({"name": ""}, {"send": {"driver": "sms"}}, {"bogus": 1}, [1])
    ] + [client.patch(f"/api/workflow-configs/{created['id']}", data=b"nope",
                      content_type="application/json", headers=admin_headers)]

    assert [r.status_code for r in responses] == [400] * 5
    assert client.get(f"/api/workflow-configs/{created['id']}",
                      headers=admin_headers).get_json() == created


# Conversations.


def test_it_lists_conversations_newest_first_without_lease_fields(client, admin_headers) -> None:
    first = make_conversation("1", lease_owner="worker-1", lease_token=3)
    second = make_conversation("2", contact_name="Ana")

    response = client.get("/api/conversations", headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert [c["id"] for c in body["conversations"]] == [second, first]
    assert body["has_more"] is False
    assert body["next_before_id"] is None
    assert body["conversations"][0]["contact_name"] == "Ana"
    assert "lease" not in response.get_data(as_text=True)


def test_it_filters_conversations_by_instance(client, admin_headers) -> None:
    make_conversation("1", instance="loja-teste")
    other = make_conversation("2", instance="outra")

    response = client.get("/api/conversations?instance=outra", headers=admin_headers)

    assert [c["id"] for c in response.get_json()["conversations"]] == [other]


def test_it_filters_conversations_by_status_as_it_is_now(client, admin_headers) -> None:
    now = utcnow()
    active = make_conversation("1")
    paused = make_conversation("2", status="paused", pause_reason="operator")
    expired = make_conversation("3", status="paused", pause_reason="lunch",
                                paused_until=now - timedelta(minutes=1))
    timed = make_conversation("4", status="paused", pause_reason="lunch",
                              paused_until=now + timedelta(minutes=10))

    def ids(status: str) -> list[int]:
        response = client.get(f"/api/conversations?status={status}", headers=admin_headers)
        assert response.status_code == 200
        return [c["id"] for c in response.get_json()["conversations"]]

    assert ids("paused") == [timed, paused]
    assert ids("active") == [expired, active]


def test_it_pages_through_conversations(client, admin_headers) -> None:
    ids = [make_conversation(str(n)) for n in range(5)]

    first = client.get("/api/conversations?limit=2", headers=admin_headers).get_json()
    second = client.get(f"/api/conversations?limit=2&before_id={first['next_before_id']}",
                        headers=admin_headers).get_json()
    third = client.get(f"/api/conversations?limit=2&before_id={second['next_before_id']}",
                       headers=admin_headers).get_json()

    pages = [[c["id"] for c in page["conversations"]] for page in (first, second, third)]
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
    assert [page["has_more"] for page in (first, second, third)] == [True, True, False]
    assert third["next_before_id"] is None


def test_it_gets_one_conversation(client, admin_headers) -> None:
    config = create_config(client, admin_headers)
    now = utcnow()
    conversation_id = make_conversation(contact_name="Ana", workflow_config_id=config["id"],
                                        last_inbound_at=now)

    response = client.get(f"/api/conversations/{conversation_id}", headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == conversation_id
    assert body["chat_jid"] == "5511999990001@s.whatsapp.net"
    assert body["contact_phone"] == "5511999990001"
    assert body["workflow_config_id"] == config["id"]
    assert body["status"] == "active"
    assert datetime.fromisoformat(body["last_inbound_at"]) == now


def test_it_answers_404_for_an_unknown_conversation(client, admin_headers) -> None:
    paths = ["/api/conversations/404", "/api/conversations/404/messages"]
    responses = [client.get(path, headers=admin_headers) for path in paths] + [
        client.post(f"/api/conversations/404/{action}", headers=admin_headers)
        for action in ("pause", "resume")
    ]

    assert [r.status_code for r in responses] == [404] * 4
    assert responses[0].get_json() == {"error": "conversation 404 not found"}


# Messages.


def add_messages(conversation_id: int, count: int) -> list[int]:
    with session_scope() as session:
        rows = [
            Message(conversation_id=conversation_id, instance="loja-teste", role="customer",
                    content=f"mensagem {n}", wa_message_id=f"WA{conversation_id}-{n}")
            for n in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def test_it_lists_a_conversations_messages_in_order(client, admin_headers) -> None:
    conversation_id = make_conversation()
    other_id = make_conversation("2")
    add_messages(other_id, 1)
    sent_at = utcnow()
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="sent")
        session.add(run)
        session.flush()
        session.add_all([
            Message(conversation_id=conversation_id, instance="loja-teste", role="customer",
                    content="Oi", wa_message_id="WA1", reply_run_id=run.id),
            Message(conversation_id=conversation_id, instance="loja-teste", role="customer",
                    content="", wa_message_id="WA2", media_type="image", reply_run_id=run.id),
            Message(conversation_id=conversation_id, instance="loja-teste", role="assistant",
                    content="Olá! Como posso ajudar?", status="sent", seq=0,
                    provider_message_id="3EB0ABC", reply_run_id=run.id, sent_at=sent_at),
        ])
        run_id = run.id

    response = client.get(f"/api/conversations/{conversation_id}/messages",
                          headers=admin_headers)

    assert response.status_code == 200
    messages = response.get_json()["messages"]
    assert [m["content"] for m in messages] == ["Oi", "", "Olá! Como posso ajudar?"]
    assert messages[1]["media_type"] == "image"
    reply = messages[2]
    assert set(reply) == {"id", "role", "content", "wa_message_id", "media_type", "status",
                          "provider_message_id", "reply_run_id", "created_at", "sent_at",
                          "quoted", "reactions"}
    assert (reply["quoted"], reply["reactions"]) == (None, [])
    assert (reply["role"], reply["status"], reply["provider_message_id"]) == (
        "assistant", "sent", "3EB0ABC")
    assert reply["reply_run_id"] == run_id
    assert datetime.fromisoformat(reply["sent_at"]) == sent_at
    assert messages[0]["sent_at"] is None


def test_it_pages_messages_backwards_keeping_each_page_chronological(
    client, admin_headers
) -> None:
    conversation_id = make_conversation()
    ids = add_messages(conversation_id, 5)
    url = f"/api/conversations/{conversation_id}/messages"

    latest = client.get(f"{url}?limit=2", headers=admin_headers).get_json()
    older = client.get(f"{url}?limit=2&before_id={latest['next_before_id']}",
                       headers=admin_headers).get_json()
    oldest = client.get(f"{url}?limit=2&before_id={older['next_before_id']}",
                        headers=admin_headers).get_json()

    assert [m["id"] for m in latest["messages"]] == ids[3:]
    assert [m["id"] for m in older["messages"]] == ids[1:3]
    assert [m["id"] for m in oldest["messages"]] == ids[:1]
    assert (oldest["has_more"], oldest["next_before_id"]) == (False, None)


def test_it_pages_messages_forwards_with_after_id(client, admin_headers) -> None:
    conversation_id = make_conversation()
    ids = add_messages(conversation_id, 3)
    url = f"/api/conversations/{conversation_id}/messages"

    page = client.get(f"{url}?limit=2&after_id={ids[0]}", headers=admin_headers).get_json()

    assert [m["id"] for m in page["messages"]] == ids[1:]
    assert (page["has_more"], page["next_after_id"]) == (False, ids[2])


# Pause and resume.


def test_pausing_without_a_body_pauses_until_resumed(client, admin_headers) -> None:
    conversation_id = make_conversation()

    response = client.post(f"/api/conversations/{conversation_id}/pause", headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["paused_until"]) == ("paused", None)
    assert body["pause_reason"]
    with session_scope() as session:
        [event] = session.scalars(select(Event)).all()
        assert (event.type, event.conversation_id) == ("conversation.paused", conversation_id)
        assert event.payload == {"reason": body["pause_reason"], "until": None, "actor": "admin"}


def test_pausing_for_some_minutes_shows_when_it_ends(client, admin_headers) -> None:
    conversation_id = make_conversation()
    before = utcnow()

    response = client.post(f"/api/conversations/{conversation_id}/pause",
                           json={"reason": "cliente VIP", "minutes": 15}, headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    until = datetime.fromisoformat(body["paused_until"])
    assert before + timedelta(minutes=15) <= until <= utcnow() + timedelta(minutes=15)
    assert (body["status"], body["pause_reason"]) == ("paused", "cliente VIP")
    shown = client.get(f"/api/conversations/{conversation_id}", headers=admin_headers)
    assert shown.get_json() == body
    events = client.get(f"/api/events?conversation_id={conversation_id}",
                        headers=admin_headers).get_json()["events"]
    assert events[0]["payload"] == {"reason": "cliente VIP", "until": body["paused_until"],
                                    "actor": "admin"}


def test_resuming_shows_the_conversation_active_and_records_it(client, admin_headers) -> None:
    conversation_id = make_conversation()
    client.post(f"/api/conversations/{conversation_id}/pause", json={"reason": "almoço"},
                headers=admin_headers)

    response = client.post(f"/api/conversations/{conversation_id}/resume",
                           headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["paused_until"], body["pause_reason"]) == ("active", None, None)
    events = client.get(f"/api/events?conversation_id={conversation_id}",
                        headers=admin_headers).get_json()["events"]
    assert [e["type"] for e in events] == ["conversation.resumed", "conversation.paused"]
    assert events[0]["payload"]["actor"] == "admin"
    with session_scope() as session:
        assert not conversations.is_paused(session.get(Conversation, conversation_id), utcnow())


def test_resuming_an_active_conversation_changes_nothing(client, admin_headers) -> None:
    conversation_id = make_conversation()

    response = client.post(f"/api/conversations/{conversation_id}/resume",
                           headers=admin_headers)

    assert response.status_code == 200
    assert response.get_json()["status"] == "active"
    with session_scope() as session:
        assert session.scalars(select(Event)).all() == []


@pytest.mark.parametrize("body", [
    {"minutes": 0},
    {"minutes": -5},
    {"minutes": "10"},
    {"minutes": True},
    {"minutes": 10**9},
    {"reason": ""},
    {"reason": 5},
    {"reason": "x" * 201},
    {"until": "tomorrow"},
    [],
])
def test_it_rejects_an_invalid_pause_request(client, admin_headers, body) -> None:
    conversation_id = make_conversation()

    response = client.post(f"/api/conversations/{conversation_id}/pause", json=body,
                           headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["error"]
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).status == "active"


def test_it_rejects_a_pause_body_that_is_not_json(client, admin_headers) -> None:
    conversation_id = make_conversation()

    response = client.post(f"/api/conversations/{conversation_id}/pause", data=b"minutes=5",
                           content_type="application/x-www-form-urlencoded",
                           headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json() == {"error": "body is not valid JSON"}


# Events.


def test_it_lists_events_newest_first_and_filters_them(client, admin_headers) -> None:
    one, two = make_conversation("1"), make_conversation("2")
    received = add_event("message.received", one, wa_message_id="A")
    ignored = add_event("message.ignored", None, reason="group")
    sent = add_event("message.sent", one, provider_message_id="P")
    other = add_event("message.received", two, wa_message_id="B")

    def ids(query: str = "") -> list[int]:
        response = client.get(f"/api/events{query}", headers=admin_headers)
        assert response.status_code == 200
        return [e["id"] for e in response.get_json()["events"]]

    assert ids() == [other, sent, ignored, received]
    assert ids(f"?conversation_id={one}") == [sent, received]
    assert ids("?type=message.received") == [other, received]
    assert ids(f"?type=message.received&conversation_id={two}") == [other]
    assert ids("?type=llm.failed") == []


def test_it_shows_an_events_fields(client, admin_headers) -> None:
    conversation_id = make_conversation()
    add_event("message.ignored", conversation_id, reason="group")

    [event] = client.get("/api/events", headers=admin_headers).get_json()["events"]

    assert event["type"] == "message.ignored"
    assert event["conversation_id"] == conversation_id
    assert event["run_id"] is None
    assert event["payload"] == {"reason": "group"}
    assert datetime.fromisoformat(event["created_at"])


def test_it_pages_events_backwards_and_tails_them_forwards(client, admin_headers) -> None:
    ids = [add_event("message.received", None, n=n) for n in range(5)]

    newest = client.get("/api/events?limit=3", headers=admin_headers).get_json()
    rest = client.get(f"/api/events?limit=3&before_id={newest['next_before_id']}",
                      headers=admin_headers).get_json()
    tail = client.get(f"/api/events?limit=3&after_id={ids[0]}", headers=admin_headers).get_json()
    tail_rest = client.get(f"/api/events?limit=3&after_id={tail['next_after_id']}",
                           headers=admin_headers).get_json()
    caught_up = client.get(f"/api/events?after_id={ids[-1]}", headers=admin_headers).get_json()

    assert [e["id"] for e in newest["events"]] == ids[:1:-1]
    assert [e["id"] for e in rest["events"]] == ids[1::-1]
    assert (rest["has_more"], rest["next_before_id"]) == (False, None)
    assert [e["id"] for e in tail["events"]] == ids[1:4]
    assert tail["has_more"] is True
    assert [e["id"] for e in tail_rest["events"]] == ids[4:]
    assert (caught_up["events"], caught_up["next_after_id"]) == ([], ids[-1])


# Bad query parameters and path ids.


@pytest.mark.parametrize("path", [
    "/api/conversations?limit=0",
    "/api/conversations?limit=201",
    "/api/conversations?limit=ten",
    "/api/conversations?limit=-1",
    "/api/conversations?limit=1e3",
    "/api/conversations?before_id=abc",
    "/api/conversations?before_id=0",
    "/api/conversations?before_id=99999999999999999999999",
    "/api/conversations?before_id=" + "9" * 5000,
    "/api/conversations?status=sleeping",
    "/api/conversations?instance=lo%00ja",
    "/api/conversations/abc",
    "/api/conversations/1.5/messages",
    "/api/conversations/-1",
    "/api/conversations/99999999999999999999",
    "/api/conversations/1/messages?limit=x",
    "/api/conversations/1/messages?after_id=%EF%BC%95",
    "/api/events?conversation_id=abc",
    "/api/events?conversation_id= 1",
    "/api/events?after_id=1_000",
    "/api/events?type=a%00b",
    "/api/events?limit=500",
    "/api/workflow-configs/abc",
    "/api/workflow-configs?instance=%00",
])
def test_it_answers_400_for_bad_query_parameters_and_ids(client, admin_headers, path) -> None:
    make_conversation()

    response = client.get(path, headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["error"]


def test_it_ignores_empty_query_parameters(client, admin_headers) -> None:
    make_conversation()

    response = client.get("/api/conversations?limit=&before_id=&status=&instance=",
                          headers=admin_headers)

    assert response.status_code == 200
    assert len(response.get_json()["conversations"]) == 1


def test_a_missing_id_at_the_bigint_limit_is_just_not_found(client, admin_headers) -> None:
    response = client.get(f"/api/conversations/{2**63 - 1}", headers=admin_headers)

    assert response.status_code == 404


# The database going away.


def test_it_answers_503_when_the_database_is_unreachable(db, base_env, admin_headers) -> None:
    from webhook_app import create_app

    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/zapreply?connect_timeout=2"
    client = create_app({**base_env, "DATABASE_URL": unreachable}).test_client()

    responses = [
        client.get("/api/workflow-configs", headers=admin_headers),
        client.get("/api/conversations", headers=admin_headers),
        client.post("/api/conversations/1/pause", headers=admin_headers),
        client.get("/api/events", headers=admin_headers),
        client.post("/api/workflow-configs", json=config_body(), headers=admin_headers),
    ]

    assert [r.status_code for r in responses] == [503] * 5
    assert responses[0].get_json() == {"error": "database unavailable"}
    assert all(SECRET not in r.get_data(as_text=True) for r in responses)


def test_groups_need_the_wuzapi_driver(client, admin_headers) -> None:
    livchat = {"driver": "livchat", "base_url": "https://livchat.example", "token": SECRET}
    refused = client.post("/api/workflow-configs", headers=admin_headers,
                          json=config_body(send=livchat, options={"groups": "on"}))
    assert refused.status_code == 400 and "wuzapi driver" in refused.get_json()["error"]

    config = create_config(client, admin_headers, send=livchat)
    patched = client.patch(f"/api/workflow-configs/{config['id']}", headers=admin_headers,
                           json={"options": {"groups": "mention"}})
    assert patched.status_code == 400 and "wuzapi driver" in patched.get_json()["error"]
    with session_scope() as session:
        assert (session.get(WorkflowConfig, config["id"]).options or {}).get("groups") is None

    grouped = create_config(client, admin_headers, options={"groups": "on"})
    moved = client.patch(f"/api/workflow-configs/{grouped['id']}", headers=admin_headers,
                         json={"send": livchat})
    assert moved.status_code == 400
