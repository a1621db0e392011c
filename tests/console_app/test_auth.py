"""Signing in and out, sessions, roles, CSRF and throttling, through the test client."""

from __future__ import annotations

from sqlalchemy import select

from tests.console_app.conftest import (
    PASSWORD,
    add_operator,
    csrf_of,
    make_conversation,
    post_form,
    sign_in,
)
from zapreply.actions import operators
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Event, Operator, SignInFailure


def _events(type_: str) -> list[Event]:
    with session_scope() as session:
        return list(session.scalars(select(Event).where(Event.type == type_)))


def test_every_page_redirects_to_login_when_signed_out(console):
    client = console.test_client()
    for path in ("/", "/conversations/1", "/runs", "/configs", "/configs/new"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), path


def test_a_post_signed_out_redirects_to_login_and_changes_nothing(console):
    response = console.test_client().post("/conversations/1/take-over", data={})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_an_operator_signs_in_and_the_cookie_is_httponly_and_samesite(console):
    add_operator("ana")
    client = console.test_client()
    response = sign_in(client, "ana")
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here
    page = client.get("/")
    assert page.status_code == 200 and "ana" in page.get_data(as_text=True)
    assert [e.payload["actor"] for e in _events(EventType.OPERATOR_SIGNED_IN)] == ["operator:ana"]


def test_the_cookie_is_secure_when_the_console_is_served_over_https(db, base_env):
    from console_app import create_app

    add_operator("ana")
    client = create_app({**base_env, "CONSOLE_URL": "https://console.example"}).test_client()
    assert "Secure" in sign_in(client, "ana").headers["Set-Cookie"]


def test_a_wrong_password_is_refused_and_recorded_without_the_password(console):
    add_operator("ana")
    response = sign_in(console.test_client(), "ana", "not the password")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    failed = _events(EventType.OPERATOR_SIGN_IN_FAILED)
    assert [e.payload for e in failed] == [{"operator": "ana"}]


def test_an_unknown_username_gets_the_same_refusal(console):
    response = sign_in(console.test_client(), "nobody", "whatever password")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)


def test_sign_ins_are_throttled_after_five_refusals_even_with_the_right_password(console):
    add_operator("ana")
    client = console.test_client()
    for _ in range(operators.MAX_FAILURES_PER_USERNAME):
        assert sign_in(client, "ana", "wrong password!").status_code == 401
    response = sign_in(client, "ana", PASSWORD)
    assert response.status_code == 429
    assert "too many failed sign-ins" in response.get_data(as_text=True)


def test_a_successful_sign_in_clears_the_username_s_refusals(console):
    add_operator("ana")
    client = console.test_client()
    sign_in(client, "ana", "wrong password!")
    assert sign_in(client, "ana").status_code == 302
    with session_scope() as session:
        assert session.scalars(select(SignInFailure)).all() == []


def test_a_login_form_posted_without_its_csrf_token_is_refused(console):
    add_operator("ana")
    client = console.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "ana", "password": PASSWORD})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)


def test_an_action_posted_without_its_csrf_token_is_refused_and_changes_nothing(admin):
    conversation_id = make_conversation()
    response = admin.post(f"/conversations/{conversation_id}/take-over", data={})
    assert response.status_code == 400
    response = admin.post(f"/conversations/{conversation_id}/take-over",
                          data={"csrf_token": "forged"})
    assert response.status_code == 400
    assert _events(EventType.CONVERSATION_PAUSED) == []


def test_sign_out_ends_the_session(admin):
    response = post_form(admin, "/logout")
    assert response.status_code == 302
    assert admin.get("/").status_code == 302
    assert [e.payload["actor"] for e in _events(EventType.OPERATOR_SIGNED_OUT)] == ["operator:ana"]


def test_disabling_an_operator_ends_their_session(admin):
    with session_scope() as session:
        operators.set_active(session, "ana", False, actor="test")
    assert admin.get("/").status_code == 302


def test_resetting_the_password_ends_sessions_signed_in_with_the_old_one(admin):
    with session_scope() as session:
        operators.reset_password(session, "ana", "a brand new password", actor="test")
    assert admin.get("/").status_code == 302


def test_an_agent_cannot_open_configs(agent):
    for path in ("/configs", "/configs/new", "/configs/1"):
        response = agent.get(path)
        assert response.status_code == 403, path
        assert "Only an admin" in response.get_data(as_text=True)
    assert "Configs</a>" not in agent.get("/").get_data(as_text=True)


def test_the_login_page_never_redirects_elsewhere(console):
    add_operator("ana")
    client = console.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "ana", "password": PASSWORD,
                                           "csrf_token": token,
                                           "next": "//evil.example/phish"})
    assert response.headers["Location"] == "/"


def test_passwords_are_stored_as_scrypt_hashes(console):
    add_operator("ana")
    with session_scope() as session:
        stored = session.scalar(select(Operator.password_hash))
    assert stored.startswith("scrypt:") and PASSWORD not in stored
