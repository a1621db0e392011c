"""Group chats, the pure parts: reading a group message (sender, mentions, the quoted message),
recognising the bot's number, and how a member's message reads to the model."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conftest import FIXTURES
from zapreply.channel import wuzapi
from zapreply.rules import configs, groups
from zapreply.rules.options import Options
from zapreply.storage.models import Message

JSON = "application/json"
GROUP = json.loads((FIXTURES / "message_group.json").read_text())
BASE = {
    "name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
    "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
}


def read_group(message: dict[str, Any] | None = None, **info: Any):  # type: ignore[no-untyped-def]
    envelope = copy.deepcopy(GROUP)
    envelope["event"]["Info"].update(info)
    if message is not None:
        envelope["event"]["Message"] = message
    parsed = wuzapi.parse_envelope(JSON, json.dumps(envelope).encode())
    return wuzapi.read_message(parsed, groups=True)


def test_a_group_message_is_read_only_when_asked_to():
    envelope = wuzapi.parse_envelope(JSON, (FIXTURES / "message_group.json").read_bytes())
    assert wuzapi.read_message(envelope).reason == "group chat"

    message = wuzapi.read_message(envelope, groups=True)
    assert isinstance(message, wuzapi.InboundMessage)
    assert (message.chat_jid, message.sender_jid) == ("120363000000000001@g.us",
                                                      "100000000000002@lid")
    # The member's number (from SenderAlt under LID addressing) and name.
    assert (message.contact_phone, message.push_name) == ("5511900000002", "Cliente Teste Dois")
    assert message.text == "Bom dia, pessoal! Alguém sabe o horário de hoje?"
    assert message.is_group and message.mentions == () and message.quoted_id is None


def test_it_reads_mentions_and_the_quoted_message_of_a_group_message():
    message = read_group({"extendedTextMessage": {
        "text": "@5511900000099 qual o horário?",
        "contextInfo": {"mentionedJID": ["5511900000099@s.whatsapp.net", 7, "x" * 300],
                        "stanzaID": "3EB0AAAA", "participant": "5511900000099@s.whatsapp.net"},
    }})
    assert message.mentions == ("5511900000099@s.whatsapp.net",)
    assert (message.quoted_id, message.quoted_sender) == ("3EB0AAAA",
                                                          "5511900000099@s.whatsapp.net")
    payload = message.as_payload()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["mentions"] == ["5511900000099@s.whatsapp.net"]


def test_it_reads_the_older_field_names_and_a_caption_s_context():
    message = read_group({"imageMessage": {
        "caption": "olha isso @bot", "contextInfo": {"mentionedJid": ["100000000000099@lid"],
                                                     "stanzaId": "3EB0BBBB"}}})
    assert (message.media_type, message.mentions, message.quoted_id) == (
        "image", ("100000000000099@lid",), "3EB0BBBB")


@pytest.mark.parametrize("context", [{"mentionedJID": "not a list"}, {"stanzaID": 5},
                                     {"participant": ["x"]}, "not an object"])
def test_a_strange_context_does_not_crash(context: Any) -> None:
    message = read_group({"extendedTextMessage": {"text": "oi", "contextInfo": context}})
    assert isinstance(message, wuzapi.InboundMessage)
    assert message.mentions == () and message.quoted_id is None and message.quoted_sender is None


def test_a_one_to_one_message_carries_no_group_fields():
    envelope = wuzapi.parse_envelope(JSON, (FIXTURES / "message_extended_text.json").read_bytes())
    message = wuzapi.read_message(envelope, groups=True)
    assert not message.is_group
    assert "mentions" not in message.as_payload() and "is_group" not in message.as_payload()


def test_the_bot_number_is_recognised_in_any_formatting():
    assert groups.bot_ids(Options(bot_number="+55 (11) 90000-0099")) == {"5511900000099"}
    assert groups.bot_ids(Options(bot_number=["5511900000099:12@s.whatsapp.net",
                                          "100000000000099@lid"])) == {
        "5511900000099", "100000000000099"}
    assert groups.bot_ids(Options(bot_number=None)) == set()
    assert groups.bot_id("loja@s.whatsapp.net") is None


def test_a_member_s_message_reads_to_the_model_with_their_name():
    named = Message(role="customer", content="oi", extra={
        "sender": "100000000000002@lid", "sender_name": "Ana", "sender_phone": "5511900000002"})
    unnamed = Message(role="customer", content="oi", extra={"sender": "100000000000003@lid"})
    assert groups.attributed(named, "oi") == '["Ana"] oi'
    assert groups.attributed(unnamed, "oi") == "[100000000000003] oi"
    assert groups.attributed(named, [{"type": "text", "text": "oi"}])[0] == {
        "type": "text", "text": '["Ana"]'}

    messages = [{"role": "system", "content": "Você é o atendente."}]
    groups.tell_the_model(messages, [named])
    assert messages[0]["content"].startswith("Você é o atendente.\n\nThis is a WhatsApp group")
    assert messages[0]["content"].endswith('The latest message is from "Ana" (5511900000002).')


def test_the_config_validates_the_group_options():
    values = configs.validate({**BASE, "options": {"groups": "mention",
                                                   "bot_number": ["5511900000099", "1@lid"]}})
    assert values["options"]["groups"] == "mention"
    assert Options().groups == "off"


@pytest.mark.parametrize("options, message", [
    ({"groups": "sometimes"}, "must be one of: off, on, mention"),
    ({"groups": True}, "wrong type"),
    ({"bot_number": "the bot"}, "bot's phone number or JID"),
    ({"bot_number": []}, "bot's phone number or JID"),
    ({"bot_number": ["5511900000099", ""]}, "bot.s phone number or JID"),
    ({"bot_number": 5511900000099}, "wrong type"),
])
def test_the_config_refuses_bad_group_options(options, message):
    with pytest.raises(configs.InvalidConfig, match=message):
        configs.validate({**BASE, "options": options})
