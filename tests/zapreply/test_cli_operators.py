"""`zapreply operator …`: console accounts from the command line, passwords from stdin."""

from __future__ import annotations

import io
import json

from sqlalchemy import select
from werkzeug.security import check_password_hash

from zapreply import cli
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, Operator


def _operator(name: str) -> Operator:
    with session_scope() as session:
        return session.scalar(select(Operator).where(Operator.username == name))


def test_an_operator_is_added_with_the_password_read_from_stdin(db, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert cli.main(["operator", "add", "Ana", "--role", "admin", "--password-stdin"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["username"] == "ana" and shown["role"] == "admin"
    assert "password" not in json.dumps(shown)
    assert check_password_hash(_operator("ana").password_hash, "a long enough password")
    with session_scope() as session:
        event = session.scalar(select(Event))
    assert event.type == "operator.added" and "a long enough password" not in json.dumps(
        event.payload)


def test_a_short_password_a_bad_role_or_a_taken_name_is_refused(db, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["operator", "add", "ana", "--role", "agent", "--password-stdin"]) == 2
    assert "10 to 200 characters" in capsys.readouterr().err
    assert _operator("ana") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert cli.main(["operator", "add", "ana", "--role", "agent", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert cli.main(["operator", "add", "ana", "--role", "agent", "--password-stdin"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_operators_are_listed_disabled_enabled_and_given_new_passwords(db, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    cli.main(["operator", "add", "beto", "--role", "agent", "--password-stdin"])
    assert cli.main(["operator", "disable", "beto"]) == 0
    assert _operator("beto").is_active is False
    assert cli.main(["operator", "enable", "beto"]) == 0
    assert _operator("beto").is_active is True
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert cli.main(["operator", "reset-password", "beto", "--password-stdin"]) == 0
    assert check_password_hash(_operator("beto").password_hash, "another long password")
    capsys.readouterr()
    assert cli.main(["operator", "list"]) == 0
    assert [o["username"] for o in json.loads(capsys.readouterr().out)] == ["beto"]
    assert cli.main(["operator", "disable", "nobody"]) == 1
