"""`zapreply config create|update --option KEY=VALUE` sets every option, the structured ones
too, through the same validation as the admin API; README documents every option and every
event type."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from tests.conftest import ROOT
from zapreply import cli
from zapreply.rules.configs import MASK
from zapreply.rules.options import DEFAULTS, DEFINITIONS
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, WorkflowConfig, utcnow

BASE = ["--name", "Loja", "--instance", "loja-cli", "--model", "openai/gpt-4o-mini",
        "--driver", "wuzapi", "--base-url", "http://wuzapi:8080", "--token", "user-token"]
TOOL = {"name": "consultar_pedido", "description": "Status de um pedido.",
        "parameters": {"type": "object", "properties": {"numero": {"type": "string"}}},
        "url": "https://loja.example/api/pedidos/{numero}", "method": "GET",
        "headers": {"Authorization": "Bearer segredo"}}
# A value other than the default for every option, as typed on a command line.
SAMPLES = {
    "temperature": ("0.3", 0.3), "max_tokens": ("500", 500), "history_limit": ("20", 20),
    "fallback_text": ("Já volto!", "Já volto!"), "handoff_text": ("Vou chamar alguém.",
                                                                  "Vou chamar alguém."),
    "human_pause_minutes": ("null", None), "resume_keyword": ("#bot", "#bot"),
    "reset_keyword": ("recomeçar", "recomeçar"), "session_idle_hours": ("12", 12),
    "max_input_chars": ("2000", 2000), "rate_limit_per_minute": ("10", 10),
    "new_conversations_per_minute": ("null", None),
    "loop_guard_replies": ("5", 5), "loop_guard_minutes": ("1.5", 1.5),
    "timezone": ("America/Sao_Paulo", "America/Sao_Paulo"),
    "typing_indicator": ("false", False), "typing_ms_per_char": ("30", 30),
    "typing_max_seconds": ("2", 2), "split_paragraphs": ("false", False),
    "mark_read": ("true", True), "trigger": ("keyword", "keyword"),
    "trigger_operator": ("regex", "regex"),
    "trigger_keywords": ('["^pedido \\\\d+"]', ["^pedido \\d+"]),
    "allow_contacts": ('["5511900000001"]', ["5511900000001"]),
    "deny_contacts": ('["5511900000002@s.whatsapp.net"]', ["5511900000002@s.whatsapp.net"]),
    "tools": (json.dumps([TOOL]), None),  # checked apart: headers come back masked
    "tool_private_hosts": ('["erp.interno"]', ["erp.interno"]),
    "daily_token_budget": ("100000", 100000), "daily_cost_budget": ("2.5", 2.5),
    "budget_action": ("handoff", "handoff"), "groups": ("mention", "mention"),
    "bot_number": ('["5511900000099", "100000000000099@lid"]',
                   ["5511900000099", "100000000000099@lid"]),
    "opening_hours": ('{"mon": ["09:00-12:00", "13:00-18:00"], "sat": ["22:00-02:00"]}',
                      {"mon": ["09:00-12:00", "13:00-18:00"], "sat": ["22:00-02:00"]}),
    "away_message": ("Fechados agora", "Fechados agora"), "outside_hours": ("answer", "answer"),
    "transcribe_audio": ("false", False),
    "transcription_model": ("groq/whisper-large-v3", "groq/whisper-large-v3"),
    "transcription_language": ("pt", "pt"), "vision": ("never", "never"),
    "media_fallback_text": ("Não abro arquivos.", "Não abro arquivos."),
    "retention_days": ("30", 30),
    "knowledge_language": ("english", "english"), "knowledge_results": ("3", 3),
    "knowledge_only": ("true", True),
    "embedding_model": ("openai/text-embedding-3-small", "openai/text-embedding-3-small"),
    "knowledge_min_similarity": ("0.4", 0.4),
    "contact_memory": ("true", True), "contact_notes_max_chars": ("500", 500),
    "max_message_age_minutes": ("120", 120), "stale_action": ("answer_latest", "answer_latest"),
    "send_rate_per_minute": ("12", 12), "min_send_interval_seconds": ("0.5", 0.5),
    "daily_new_conversations": ("null", None),
}


def created(capsys) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(capsys.readouterr().out)


def test_every_option_has_a_sample():
    assert set(SAMPLES) == set(DEFAULTS)


def test_the_cli_sets_every_option(db, capsys):
    arguments = [f"--option={key}={raw}" for key, (raw, _value) in SAMPLES.items()]
    assert cli.main(["config", "create", *BASE, *arguments]) == 0, capsys.readouterr().err

    options = created(capsys)["options"]
    for key, (_raw, value) in SAMPLES.items():
        if key != "tools":
            assert options[key] == value, key
    assert options["tools"][0]["headers"] == {"Authorization": MASK}
    with session_scope() as session:
        stored = session.scalars(select(WorkflowConfig)).one().options
    assert stored["tools"][0]["headers"] == {"Authorization": "Bearer segredo"}


def test_update_changes_one_option_and_keeps_the_rest(db, tmp_path, capsys):
    schedule = tmp_path / "hours.json"
    schedule.write_text(json.dumps({"mon": ["09:00-18:00"]}))
    assert cli.main(["config", "create", *BASE, "--option", f"opening_hours=@{schedule}",
                     "--option", "away_message=Fechados", "--option", f"tools={json.dumps([TOOL])}"]) == 0
    config_id = created(capsys)["id"]

    assert cli.main(["config", "update", str(config_id), "--option", "outside_hours=answer"]) == 0

    options = created(capsys)["options"]
    assert (options["opening_hours"], options["away_message"], options["outside_hours"]) == (
        {"mon": ["09:00-18:00"]}, "Fechados", "answer")
    with session_scope() as session:
        stored = session.get(WorkflowConfig, config_id).options
    assert stored["tools"][0]["headers"] == {"Authorization": "Bearer segredo"}


def test_update_refuses_to_move_the_masked_token_to_another_host(db, capsys):
    assert cli.main(["config", "create", *BASE]) == 0
    config_id = created(capsys)["id"]

    moved = cli.main(["config", "update", str(config_id), "--driver", "wuzapi",
                      "--base-url", "http://attacker.example:8080", "--token", MASK])

    assert moved == 2
    assert "give the token again when changing the host" in capsys.readouterr().err
    with session_scope() as session:
        assert session.get(WorkflowConfig, config_id).send == {
            "driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "user-token"}
    assert cli.main(["config", "update", str(config_id), "--driver", "wuzapi",
                     "--base-url", "http://wuzapi:8080/v2", "--token", MASK]) == 0


@pytest.mark.parametrize(("option", "message"), [
    ("groups=sometimes", "option 'groups' must be one of"),
    ("opening_hours={\"mon\": [\"18:00\"]}", "not an 'HH:MM-HH:MM' range"),
    ("max_input_chars=muito", "option 'max_input_chars' has the wrong type"),
    ("no_such_option=1", "unknown option 'no_such_option'"),
    ("contact_memory=sim", "option 'contact_memory' has the wrong type"),
    ("contact_notes_max_chars=10", "option 'contact_notes_max_chars' must be from 50 to 4000"),
    ("tools=@/nonexistent/tools.json", "cannot read JSON"),
    ("sem-igual", "expected KEY=VALUE"),
    ("stale_action=sometimes", "option 'stale_action' must be one of"),
    ("send_rate_per_minute=0", "option 'send_rate_per_minute' must be greater than 0"),
    ("min_send_interval_seconds=-2", "option 'min_send_interval_seconds' must not be negative"),
    ("max_message_age_minutes=muito", "option 'max_message_age_minutes' has the wrong type"),
    ("daily_new_conversations=0", "option 'daily_new_conversations' must be greater than 0"),
])
def test_a_bad_option_is_an_error_message(db, capsys, option, message):
    assert cli.main(["config", "create", *BASE, "--option", option]) == 2
    assert message in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalars(select(WorkflowConfig)).all() == []


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _readme_options() -> dict[str, str]:
    """The README's options table: each option it names, with the default it shows."""
    table = _readme().split("Options (all optional", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            names = re.findall(r"`([a-z_]+)`", cells[0])
            defaults = [d.strip() for d in cells[1].split(",")] if len(names) > 1 else [cells[1]]
            assert len(defaults) == len(names), line
            for name, default in zip(names, defaults, strict=True):
                rows[name] = default
    return rows


def test_the_readme_options_table_lists_every_option_with_its_default():
    rows = _readme_options()
    assert sorted(set(DEFAULTS) - set(rows)) == []
    for name, default in DEFAULTS.items():
        shown = rows[name].strip("`")
        if default is None:
            assert shown.startswith(("none", "provider's", "30")), (name, shown)
        elif isinstance(default, bool):
            assert shown == str(default).lower(), (name, shown)
        elif isinstance(default, int | float):
            assert float(shown) == float(default), (name, shown)
        elif isinstance(default, list):
            assert shown == "[]", (name, shown)
        else:
            assert shown == default, (name, shown)


def test_the_readme_documents_no_option_that_does_not_exist():
    assert sorted(set(_readme_options()) - set(DEFAULTS)) == []


def test_every_option_says_what_it_is_for():
    assert [name for name, definition in DEFINITIONS.items()
            if not definition.metadata["doc"].strip()] == []


def test_the_readme_lists_every_event_type():
    types = list(EventType)
    assert len(types) >= 19
    section = _readme().split("### Events", 1)[1]
    assert [t for t in types if f"`{t}`" not in section] == []


def test_an_operator_pauses_and_resumes_a_conversation_from_the_cli(db, capsys):
    with session_scope() as session:
        conversation = Conversation(instance="loja", chat_jid="5511900000001@s.whatsapp.net",
                                    status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        conversation_id = conversation.id

    for bad in (["--minutes", "-5"], ["--minutes", "0"], ["--reason", "   "]):
        assert cli.main(["conversation", "pause", str(conversation_id), *bad]) == 2
        assert "error:" in capsys.readouterr().err
    assert cli.main(["conversation", "pause", str(conversation_id), "--minutes", "30",
                     "--reason", "cliente VIP"]) == 0
    shown = created(capsys)
    assert (shown["status"], shown["pause_reason"]) == ("paused", "cliente VIP")
    assert shown["paused_until"] > utcnow().isoformat()

    assert cli.main(["conversation", "resume", str(conversation_id)]) == 0
    assert created(capsys)["status"] == "active"
    with session_scope() as session:
        trail = [(e.type, e.payload["actor"]) for e in session.scalars(
            select(Event).where(Event.conversation_id == conversation_id).order_by(Event.id))]
    assert trail == [("conversation.paused", "operator"), ("conversation.resumed", "operator")]
