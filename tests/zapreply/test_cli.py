"""The CLI as a front door to zapreply.actions: the same checks as the admin API, exit code 1
for what does not exist (or cannot be replayed), 2 for a value to change."""

from __future__ import annotations

import json

from sqlalchemy import select

from zapreply import cli
from zapreply.rules.configs import MASK
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Event, ReplyRun, WorkflowConfig

BASE = ["--name", "Loja", "--instance", "loja-cli", "--model", "openai/gpt-4o-mini",
        "--driver", "wuzapi", "--base-url", "http://wuzapi:8080", "--token", "user-token"]


def printed(capsys) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(capsys.readouterr().out)


def stored_configs() -> list[WorkflowConfig]:
    with session_scope() as session:
        return list(session.scalars(select(WorkflowConfig)).all())


def test_it_refuses_a_name_longer_than_its_column_as_the_admin_api_does(db, capsys) -> None:
    code = cli.main(["config", "create", *BASE, "--name", "L" * 201])

    assert code == 2
    assert "'name' must be at most 200 characters" in capsys.readouterr().err
    assert stored_configs() == []


def test_it_refuses_an_over_long_instance_on_update_and_keeps_the_config(db, capsys) -> None:
    assert cli.main(["config", "create", *BASE]) == 0
    config_id = printed(capsys)["id"]

    code = cli.main(["config", "update", str(config_id), "--instance", "i" * 201])

    assert code == 2
    assert "'instance' must be at most 200 characters" in capsys.readouterr().err
    assert [c.instance for c in stored_configs()] == ["loja-cli"]


def test_it_refuses_to_create_a_config_with_the_masked_token(db, capsys) -> None:
    code = cli.main(["config", "create", *BASE[:-1], MASK])

    assert code == 2
    assert "must be the real token, not the mask" in capsys.readouterr().err
    assert stored_configs() == []


def test_an_update_of_the_base_url_alone_keeps_the_driver_and_token_on_the_same_host(
        db, capsys) -> None:
    assert cli.main(["config", "create", *BASE]) == 0
    config_id = printed(capsys)["id"]

    assert cli.main(["config", "update", str(config_id),
                     "--base-url", "http://wuzapi:8080/v2"]) == 0

    assert printed(capsys)["send"] == {"driver": "wuzapi", "base_url": "http://wuzapi:8080/v2",
                                       "token": MASK}
    [config] = stored_configs()
    assert config.send["token"] == "user-token"


def test_an_update_of_the_base_url_alone_to_another_host_is_refused(db, capsys) -> None:
    assert cli.main(["config", "create", *BASE]) == 0
    config_id = printed(capsys)["id"]

    code = cli.main(["config", "update", str(config_id),
                     "--base-url", "http://attacker.example"])

    assert code == 2
    assert "give the token again when changing the host" in capsys.readouterr().err
    [config] = stored_configs()
    assert config.send["base_url"] == "http://wuzapi:8080"


def test_an_unknown_config_is_exit_code_1(db, capsys) -> None:
    assert cli.main(["config", "update", "999", "--name", "Outra"]) == 1
    assert "workflow config 999 not found" in capsys.readouterr().err
    assert cli.main(["config", "rotate-secret", "999"]) == 1
    assert "workflow config 999 not found" in capsys.readouterr().err


def test_it_refuses_a_pause_reason_longer_than_its_column(db, capsys) -> None:
    with session_scope() as session:
        conversation = Conversation(instance="loja", chat_jid="5511900000001@s.whatsapp.net",
                                    status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        conversation_id = conversation.id

    code = cli.main(["conversation", "pause", str(conversation_id), "--reason", "r" * 201])

    assert code == 2
    assert "'reason' must be at most 200 characters" in capsys.readouterr().err
    with session_scope() as session:
        assert session.get(Conversation, conversation_id).status == "active"
        assert session.scalars(select(Event)).all() == []


def test_pausing_or_resuming_an_unknown_conversation_is_exit_code_1(db, capsys) -> None:
    assert cli.main(["conversation", "pause", "999"]) == 1
    assert "conversation 999 not found" in capsys.readouterr().err
    assert cli.main(["conversation", "resume", "999"]) == 1
    assert "conversation 999 not found" in capsys.readouterr().err


def test_replaying_an_unknown_run_or_one_that_has_not_failed_is_exit_code_1(db, capsys) -> None:
    with session_scope() as session:
        conversation = Conversation(instance="loja", chat_jid="5511900000001@s.whatsapp.net",
                                    status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        run = ReplyRun(conversation_id=conversation.id, status="sent")
        session.add(run)
        session.flush()
        run_id = run.id

    assert cli.main(["replay", "999"]) == 1
    assert "no run 999" in capsys.readouterr().err
    assert cli.main(["replay", str(run_id)]) == 1
    assert "only failed runs can be replayed" in capsys.readouterr().err
    with session_scope() as session:
        assert session.get(ReplyRun, run_id).status == "sent"
