"""The receiver and group chats: dropped early unless a config on the instance answers them,
and then passed on with who is mentioned and which message is quoted."""

from __future__ import annotations

import json

from tests.webhook_app.test_webhooks import (
    FORM,
    INSTANCE,
    JSON,
    as_form,
    load_envelope,
    post,
    queued_messages,
)
from zapreply.broker.queue import HANDLE_INBOUND, RECORD_IGNORED
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig

BOT = "5511900000099@s.whatsapp.net"


def add_config(**options) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        config = WorkflowConfig(
            name="Config", instance=INSTANCE, is_active=True, model="openai/stub",
            system_prompt="", debounce_seconds=0.0, options=options,
            send={"driver": "wuzapi", "base_url": "http://127.0.0.1:9", "token": "t"},
        )
        session.add(config)
        session.flush()
        return config.id


def mentioning_group_message() -> dict:  # type: ignore[type-arg]
    envelope = load_envelope("message_group.json")
    envelope["event"]["Message"] = {"extendedTextMessage": {
        "text": "@5511900000099 oi", "contextInfo": {
            "mentionedJID": [BOT], "stanzaID": "3EB0AAAA", "participant": BOT}}}
    return envelope


def test_a_group_message_is_passed_on_when_a_config_on_the_instance_answers_groups(client):
    first = add_config()  # groups off: the instance's first config still routes the message
    add_config(groups="mention", trigger="fallback")
    answer = post(client, as_form(mentioning_group_message()), FORM)
    assert answer.get_json() == {"status": "queued", "message_id": "3A00000000000000F004"}

    [(task, kwargs)] = queued_messages()
    assert (task, kwargs["config_id"]) == (HANDLE_INBOUND, first)
    message = kwargs["message"]
    assert (message["chat_jid"], message["sender_jid"], message["contact_phone"]) == (
        "120363000000000001@g.us", "100000000000002@lid", "5511900000002")
    assert (message["is_group"], message["mentions"], message["quoted_id"],
            message["quoted_sender"]) == (True, [BOT], "3EB0AAAA", BOT)


def test_a_group_message_is_dropped_when_no_config_answers_groups(client):
    config_id = add_config(groups="on")
    with session_scope() as session:
        config = session.get(WorkflowConfig, config_id)
        config.options = {"groups": "off"}
    body = json.dumps(mentioning_group_message()).encode()
    assert post(client, body, JSON).get_json() == {"status": "ignored", "reason": "group chat"}
    [(task, kwargs)] = queued_messages()
    assert (task, kwargs["reason"], kwargs["chat_jid"]) == (
        RECORD_IGNORED, "group chat", "120363000000000001@g.us")


def test_other_non_messages_in_a_group_are_still_ignored(client):
    add_config(groups="on")
    envelope = load_envelope("message_group.json")
    envelope["event"]["Message"] = {"reactionMessage": {"text": "👍"}}
    answer = post(client, json.dumps(envelope).encode(), JSON)
    assert answer.get_json() == {"status": "ignored", "reason": "reaction"}
    [(task, _kwargs)] = queued_messages()
    assert task == RECORD_IGNORED
