"""A config's playground in the console (admins only): the page, its forms and their bad
input, the short server-sent-event answers a streaming turn is followed with, and turns
answered by a real worker process."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.console_app.conftest import csrf_of, make_conversation, post_form
from tests.e2e import wait_for
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import (
    Conversation,
    Message,
    PlaygroundTurn,
    WorkflowConfig,
    utcnow,
)

CHAT = "a1b2c3d4e5f60718"


def _page(config_id: int) -> str:
    return f"/configs/{config_id}/playground?chat={CHAT}"


def _turns() -> list[PlaygroundTurn]:
    with session_scope() as session:
        found = list(session.scalars(select(PlaygroundTurn).order_by(PlaygroundTurn.id)))
        session.expunge_all()
        return found


def _add_turn(config_id: int, **values) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        turn = PlaygroundTurn(workflow_config_id=config_id, chat=CHAT, kind="chat",
                              actor="operator:ana", customer_text="oi", dry_run=True,
                              overrides={}, tool_calls=[], **values)
        session.add(turn)
        session.flush()
        return turn.id


def test_an_agent_cannot_open_a_playground(agent):
    config_id = make_config()
    response = agent.get(_page(config_id))
    assert response.status_code == 403
    assert "Only an admin" in response.get_data(as_text=True)
    token = csrf_of(agent.get("/").get_data(as_text=True))
    response = agent.post(f"/configs/{config_id}/playground/turns",
                          data={"chat": CHAT, "message": "oi", "csrf_token": token})
    assert response.status_code == 403
    assert _turns() == []


def test_the_page_opens_a_fresh_chat_with_the_saved_prompt_and_model(admin):
    config_id = make_config(system_prompt="Você é o atendente da Loja.")
    response = admin.get(f"/configs/{config_id}/playground")
    assert response.status_code == 303
    chat = re.search(r"chat=([0-9a-f]{16})$", response.headers["Location"]).group(1)
    page = html.unescape(admin.get(response.headers["Location"]).get_data(as_text=True))
    assert f'name="chat" value="{chat}"' in page
    assert 'id="pg-model" name="model" value="openai/stub-model"' in page
    assert ">Você é o atendente da Loja.</textarea>" in page
    for field in ("pg-message", "pg-dry-run", "pg-model", "pg-system-prompt"):
        assert f'<label for="{field}">' in page, field
    assert "Nothing is sent to WhatsApp" in page


def test_the_config_pages_link_to_the_playground(admin):
    config_id = make_config()
    link = f'href="/configs/{config_id}/playground"'
    assert link in admin.get("/configs").get_data(as_text=True)
    assert link in admin.get(f"/configs/{config_id}").get_data(as_text=True)


def test_the_config_pages_unsaved_prompt_and_model_are_brought_into_a_new_chat(admin):
    config_id = make_config(system_prompt="Você é o atendente da Loja.")
    page = admin.get(f"/configs/{config_id}").get_data(as_text=True)
    assert f'formaction="/configs/{config_id}/playground/try"' in page
    response = post_form(admin, f"/configs/{config_id}/playground/try",
                         {"system_prompt": "Seja breve.", "model": "openai/outro",
                          "name": "Loja"}, page=f"/configs/{config_id}")
    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    assert ">Seja breve.</textarea>" in page and 'value="openai/outro"' in page
    assert re.search(r'name="chat" value="[0-9a-f]{16}"', page)
    with session_scope() as session:
        assert session.get(WorkflowConfig, config_id).system_prompt == \
            "Você é o atendente da Loja."


def test_a_form_posted_without_its_csrf_token_is_refused(admin):
    config_id = make_config()
    response = admin.post(f"/configs/{config_id}/playground/turns",
                          data={"chat": CHAT, "message": "oi"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert _turns() == []


@pytest.mark.parametrize(("path", "data", "message"), [
    ("turns", {"chat": CHAT, "message": "  "}, "the message is empty"),
    ("turns", {"chat": CHAT, "message": "x" * 5000}, "at most 4096 characters"),
    ("turns", {"chat": "../../etc", "message": "oi"}, "must be the 16 hexadecimal"),
    ("turns", {"chat": CHAT, "message": "oi", "model": " " + "m" * 300},
     "'model' must be at most 200"),
    ("replays", {"chat": CHAT, "conversation": "424242"}, "is not one of this config's"),
    ("replays", {"chat": CHAT, "conversation": "abc"}, "positive whole number"),
    ("replays", {"chat": CHAT}, "pick a conversation"),
])
def test_bad_input_is_a_400_with_a_message(admin, path, data, message):
    config_id = make_config()
    response = post_form(admin, f"/configs/{config_id}/playground/{path}", data,
                         page=_page(config_id))
    assert response.status_code == 400
    assert message in html.unescape(response.get_data(as_text=True))
    assert _turns() == []


def test_a_playground_of_a_config_that_does_not_exist_is_404(admin):
    assert admin.get("/configs/999/playground?chat=" + CHAT).status_code == 404


def test_a_running_turn_is_followed_by_short_answers_from_an_offset(admin):
    config_id = make_config()
    turn_id = _add_turn(config_id, status="running", streamed="Resposta: parcial")
    url = f"/configs/{config_id}/playground/turns/{turn_id}/stream"

    first = admin.get(url)
    assert first.mimetype == "text/event-stream"
    body = first.get_data(as_text=True)
    assert body.startswith("retry: 250\nid: 17\nevent: text\n")
    assert '"text": "Resposta: parcial"' in body and "event: done" not in body

    later = admin.get(url, headers={"Last-Event-ID": "10"}).get_data(as_text=True)
    assert '"text": "parcial"' in later

    with session_scope() as session:
        turn = session.get(PlaygroundTurn, turn_id)
        turn.status, turn.streamed, turn.answer = "done", "Resposta: parcial e final", "x"
    done = admin.get(url, headers={"Last-Event-ID": "17"}).get_data(as_text=True)
    assert '"text": " e final"' in done and "event: done" in done


def test_a_turn_of_another_config_or_none_is_404(admin):
    config_id = make_config()
    other = make_config(name="Outra", instance="outra")
    turn_id = _add_turn(other, status="running", streamed="x")
    for path in (f"{turn_id}/stream", f"{turn_id}", "999/stream"):
        assert admin.get(f"/configs/{config_id}/playground/turns/{path}").status_code == 404


def test_a_failed_turn_shows_its_reason_not_an_exception(admin):
    config_id = make_config()
    _add_turn(config_id, status="failed",
              error="The model call failed: AuthenticationError (401): stub failure")
    page = html.unescape(admin.get(_page(config_id)).get_data(as_text=True))
    assert 'class="pg-error" role="alert">The model call failed: AuthenticationError' in page
    assert "data-stream-url" not in page


def test_a_turn_no_worker_finished_in_time_is_shown_as_failed(admin):
    config_id = make_config()
    long_ago = utcnow() - timedelta(hours=1)
    queued = _add_turn(config_id, status="queued", updated_at=long_ago)
    running = _add_turn(config_id, status="running", streamed="Resp", updated_at=long_ago)
    body = admin.get(f"/configs/{config_id}/playground/turns/{running}/stream")
    assert "event: done" in body.get_data(as_text=True)
    page = html.unescape(admin.get(_page(config_id)).get_data(as_text=True))
    assert page.count("No worker finished this turn in time") == 2
    assert [(t.id, t.status) for t in _turns()] == [(queued, "failed"), (running, "failed")]


@pytest.mark.usefixtures("worker_process", "idle_afterwards")
def test_a_message_is_answered_by_a_worker_and_kept_apart_from_conversations(admin, wuzapi):
    config_id = make_config(wuzapi)
    response = post_form(admin, f"/configs/{config_id}/playground/turns",
                         {"chat": CHAT, "message": "Vocês abrem amanhã?", "dry_run": "on"},
                         page=_page(config_id))
    assert response.status_code == 303
    [turn] = _turns()
    assert response.headers["Location"].endswith(f"{_page(config_id)}#turn-{turn.id}")
    wait_for(lambda: _turns()[0].status == "done")

    stream = admin.get(f"/configs/{config_id}/playground/turns/{turn.id}/stream")
    assert '"text": "Resposta: Voc\\u00eas abrem amanh\\u00e3?"' in stream.get_data(as_text=True)
    page = html.unescape(admin.get(_page(config_id)).get_data(as_text=True))
    assert "Resposta: Vocês abrem amanhã?" in page
    assert "business tools: dry run" in page
    assert "Vocês abrem amanhã?" not in html.unescape(admin.get("/").get_data(as_text=True))
    assert wuzapi.requests == []
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Conversation)) == 0


@pytest.mark.usefixtures("worker_process", "idle_afterwards")
def test_a_replay_shows_the_old_and_the_new_answer_side_by_side(admin, wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = make_conversation(config_id=config_id, messages=(
        ("customer", "Oi, tem entrega?"), ("assistant", "Temos sim, para toda a cidade.")))
    page = admin.get(_page(config_id)).get_data(as_text=True)
    assert f'<option value="{conversation_id}">' in page
    response = post_form(admin, f"/configs/{config_id}/playground/replays",
                         {"chat": CHAT, "conversation": str(conversation_id),
                          "system_prompt": "Responda em uma frase."}, page=_page(config_id))
    assert response.status_code == 303
    wait_for(lambda: _turns()[0].status == "done")

    page = html.unescape(admin.get(_page(config_id)).get_data(as_text=True))
    replay = page[page.index('class="panel pg-replay"'):]
    sent_then = replay.index("Sent then")
    now = replay.index("<h3>Now</h3>")
    assert sent_then < replay.index("Temos sim, para toda a cidade.") < now
    assert now < replay.index("Resposta: Oi, tem entrega?")
    assert "with unsaved edits (system_prompt)" in replay
    assert wuzapi.requests == []
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2
