"""The console under Flask's test client, against the tests' real database and broker."""

from __future__ import annotations

import re
from typing import Any

import pytest

from zapreply.actions import operators
from zapreply.storage.db import session_scope

PASSWORD = "correct horse battery"


def add_operator(username: str, role: str = "admin", password: str = PASSWORD) -> None:
    with session_scope() as session:
        operators.add_operator(session, username, password, role, actor="test")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: Any, username: str, password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def post_form(client: Any, path: str, data: dict[str, Any] | None = None,
              page: str = "/") -> Any:
    """Post as the browser does: with the CSRF token of a page the operator has open."""
    token = csrf_of(client.get(page).get_data(as_text=True))
    return client.post(path, data={**(data or {}), "csrf_token": token})


def make_conversation(*, instance: str = "loja-teste", phone: str = "5511900000001",
                      name: str | None = "Maria", config_id: int | None = None,
                      messages: tuple[tuple[str, str], ...] = (("customer", "Oi, tudo bem?"),)
                      ) -> int:
    """A conversation with its messages as (role, text), as the pipeline would have left it."""
    from zapreply.storage.models import Conversation, Message

    with session_scope() as session:
        conversation = Conversation(instance=instance, chat_jid=f"{phone}@s.whatsapp.net",
                                    contact_phone=phone, contact_name=name,
                                    workflow_config_id=config_id, status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        for index, (role, text) in enumerate(messages):
            session.add(Message(conversation_id=conversation.id, instance=instance, role=role,
                                content=text, wa_message_id=f"WA{conversation.id}-{index}",
                                status="sent" if role != "customer" else None))
        return conversation.id


@pytest.fixture
def console(db: None, base_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from console_app import create_app

    app = create_app(base_env)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def admin(console):  # type: ignore[no-untyped-def]
    add_operator("ana", "admin")
    client = console.test_client()
    assert sign_in(client, "ana").status_code == 302
    return client


@pytest.fixture
def agent(console):  # type: ignore[no-untyped-def]
    add_operator("beto", "agent")
    client = console.test_client()
    assert sign_in(client, "beto").status_code == 302
    return client
