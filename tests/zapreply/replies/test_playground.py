"""A playground turn answered as a worker answers it (zapreply.replies.playground), with
litellm streaming from the LLM stand-in for real, on both databases: the text written into
the turn as it arrives, the chat's history, the tools with dry run on and off, a replay, and
nothing sent, stored as a conversation or counted in a budget."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from tests.factories import make_config
from tests.stubs import EndpointStub
from tests.test_business_tools import LOCAL, order_tool
from tests.zapreply.replies.test_responder import answer, receive
from zapreply.actions import playground as actions
from zapreply.replies import playground
from zapreply.storage.db import session_scope
from zapreply.storage.models import DailyUsage, Message, PlaygroundTurn, ReplyRun

CHAT = "00112233445566aa"


@pytest.fixture
def endpoint() -> Iterator[EndpointStub]:
    stub = EndpointStub().start()
    yield stub
    stub.stop()


def chat(config_id: int, text: str, *, dry_run: bool = True,
         edits: actions.Edits | None = None) -> int:
    with session_scope() as session:
        return actions.start_chat_turn(session, config_id, CHAT, text, dry_run=dry_run,
                                       edits=edits, actor="operator:ana").id


def turn(turn_id: int) -> PlaygroundTurn:
    with session_scope() as session:
        found = session.get(PlaygroundTurn, turn_id)
        session.expunge(found)
        return found


def test_the_answer_streams_into_the_turn_and_nothing_is_sent_or_budgeted(database, llm,
                                                                         wuzapi):
    config_id = make_config(wuzapi, options={"daily_token_budget": 100000})
    turn_id = chat(config_id, "Vocês abrem amanhã?")

    assert playground.run_turn(turn_id) == "done"

    done = turn(turn_id)
    assert (done.status, done.answer, done.streamed) == \
        ("done", "Resposta: Vocês abrem amanhã?", "Resposta: Vocês abrem amanhã?")
    assert (done.prompt_tokens, done.completion_tokens, done.model) == (42, 7, "stub-model")
    [request] = llm.chat_requests()
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Você é o atendente da Loja."},
        {"role": "user", "content": "Vocês abrem amanhã?"}]
    assert wuzapi.requests == []
    with session_scope() as session:
        for model in (Message, ReplyRun, DailyUsage):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model


def test_a_redelivered_task_does_not_answer_a_turn_twice(database, llm):
    turn_id = chat(make_config(), "oi")
    assert playground.run_turn(turn_id) == "done"
    assert playground.run_turn(turn_id) == "not queued"
    assert len(llm.chat_requests()) == 1


def test_the_text_is_written_in_pieces_while_the_model_streams(database, llm):
    llm.stream_delay_seconds = 0.15
    turn_id = chat(make_config(), "um dois três quatro cinco seis sete oito")
    worker = threading.Thread(target=playground.run_turn, args=(turn_id,))
    worker.start()
    seen: list[str] = []
    while worker.is_alive():
        with session_scope() as session:
            text = session.scalar(select(PlaygroundTurn.streamed)
                                  .where(PlaygroundTurn.id == turn_id))
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        worker.join(0.02)
    final = "Resposta: um dois três quatro cinco seis sete oito"
    partial = [text for text in seen if text != final]
    assert len(partial) >= 2, seen
    assert all(final.startswith(text) for text in partial)
    assert turn(turn_id).answer == final


def test_the_chats_earlier_turns_are_its_history_within_the_history_limit(database, llm):
    config_id = make_config(options={"history_limit": 3})
    for text in ("primeira", "segunda", "terceira"):
        playground.run_turn(chat(config_id, text))

    assert llm.chat_requests()[-1]["body"]["messages"] == [
        {"role": "system", "content": "Você é o atendente da Loja."},
        {"role": "user", "content": "segunda"},
        {"role": "assistant", "content": "Resposta: segunda"},
        {"role": "user", "content": "terceira"},
    ]


def test_the_reset_keyword_starts_the_chat_afresh(database, llm):
    config_id = make_config(options={"reset_keyword": "#reset"})
    for text in ("primeira", "#reset", "depois"):
        playground.run_turn(chat(config_id, text))
    assert [m["content"] for m in llm.chat_requests()[-1]["body"]["messages"]] == \
        ["Você é o atendente da Loja.", "depois"]


def test_an_unsaved_system_prompt_and_model_are_tried_without_saving_them(database, llm):
    config_id = make_config()
    turn_id = chat(config_id, "oi", edits=actions.Edits(system_prompt="Seja breve.",
                                                          model="openai/outro-modelo"))
    playground.run_turn(turn_id)
    [request] = llm.chat_requests()
    assert request["body"]["model"] == "outro-modelo"
    assert request["body"]["messages"][0] == {"role": "system", "content": "Seja breve."}


def test_a_streamed_send_whatsapp_call_is_shown_and_becomes_the_answer(database, llm, wuzapi):
    turn_id = chat(make_config(wuzapi), "manda pela ferramenta #tool")
    playground.run_turn(turn_id)
    done = turn(turn_id)
    assert done.answer == "Via ferramenta"
    assert done.tool_calls == [{"name": "send_whatsapp",
                                "arguments": {"message": "Via ferramenta"},
                                "result": "ok: message will be delivered to the customer",
                                "dry_run": False}]
    assert wuzapi.requests == []


def test_business_tools_in_dry_run_are_never_called(database, llm, endpoint):
    config_id = make_config(options={**LOCAL, "tools": [
        order_tool(f"{endpoint.url}/pedidos/{{numero}}")]})
    turn_id = chat(config_id, '#call consultar_pedido {"numero": "123"}', dry_run=True)
    playground.run_turn(turn_id)
    done = turn(turn_id)
    assert endpoint.requests == []
    assert done.answer.startswith("Resultado: dry run: consultar_pedido was not called")
    assert done.tool_calls[0]["dry_run"] is True


def test_business_tools_switched_live_are_called(database, llm, endpoint):
    config_id = make_config(options={**LOCAL, "tools": [
        order_tool(f"{endpoint.url}/pedidos/{{numero}}")]})
    turn_id = chat(config_id, '#call consultar_pedido {"numero": "123"}', dry_run=False)
    playground.run_turn(turn_id)
    assert [r["path"] for r in endpoint.requests] == ["/pedidos/123"]
    assert turn(turn_id).answer == 'Resultado: {"status": "enviado"}'


def test_a_replay_answers_the_last_customer_turn_as_the_conversation_stood(database, llm,
                                                                           wuzapi):
    config_id = make_config(wuzapi)
    conversation_id = receive(config_id, "Oi", "P1")
    answer(conversation_id)
    receive(config_id, "Quanto custa?", "P2")
    answer(conversation_id)
    llm.reset()
    wuzapi.reset()
    with session_scope() as session:
        turn_id = actions.start_replay(
            session, config_id, conversation_id, dry_run=True,
            edits=actions.Edits(system_prompt="Novo prompt."), actor="operator:ana").id

    playground.run_turn(turn_id)

    done = turn(turn_id)
    assert (done.old_answer, done.answer) == ("Resposta: Quanto custa?", "Resposta: Quanto custa?")
    [request] = llm.chat_requests()
    # The answer sent then is not part of what the model sees again.
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Novo prompt."},
        {"role": "user", "content": "Oi"},
        {"role": "assistant", "content": "Resposta: Oi"},
        {"role": "user", "content": "Quanto custa?"}]
    assert wuzapi.requests == []


def test_a_failed_model_call_leaves_a_readable_reason(database, llm):
    llm.fail_status = 401
    turn_id = chat(make_config(), "oi")
    assert playground.run_turn(turn_id) == "failed"
    done = turn(turn_id)
    assert done.status == "failed"
    assert done.error.startswith("The model call failed: AuthenticationError (401)")
    assert "Traceback" not in done.error


def test_a_replay_of_a_conversation_erased_meanwhile_fails_with_a_reason(database, llm):
    config_id = make_config()
    conversation_id = receive(config_id, "Oi", "G1")
    with session_scope() as session:
        turn_id = actions.start_replay(session, config_id, conversation_id, dry_run=True,
                                       actor="operator:ana").id
        # Detached from the conversation, as if it had been erased after the click.
        session.get(PlaygroundTurn, turn_id).replayed_conversation_id = None
    assert playground.run_turn(turn_id) == "failed"
    assert "no longer exists" in turn(turn_id).error
    assert llm.chat_requests() == []
