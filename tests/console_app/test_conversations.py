"""The inbox and a conversation's page, and each action's effect on the tables and events."""

from __future__ import annotations

import html
import json
from datetime import timedelta

from sqlalchemy import select

from tests.conftest import JPEG_THUMBNAIL, queued_tasks
from tests.console_app.conftest import make_conversation, post_form
from tests.factories import make_config
from zapreply.broker.queue import REPLY, SEND_BUSINESS
from zapreply.storage import events
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import Conversation, Event, Message, ReplyRun, utcnow


def _events(type_: str) -> list[Event]:
    with session_scope() as session:
        return list(session.scalars(select(Event).where(Event.type == type_).order_by(Event.id)))


def _conversation(conversation_id: int) -> Conversation:
    with session_scope() as session:
        return session.get(Conversation, conversation_id)


def _failed_run(conversation_id: int, error: str = "llm: RateLimitError after 5 attempts") -> int:
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="failed", attempts=5, error=error,
                       finished_at=utcnow())
        session.add(run)
        session.flush()
        for message in session.scalars(select(Message).where(
                Message.conversation_id == conversation_id, Message.role == "customer")):
            message.reply_run_id = run.id
        events.record(session, EventType.LLM_FAILED, conversation_id=conversation_id,
                      run_id=run.id, error="RateLimitError", permanent=False, attempt=5,
                      will_retry=False)
        events.record(session, EventType.RUN_FAILED, conversation_id=conversation_id,
                      run_id=run.id, reason=error, attempts=5)
        return run.id


def _touch(conversation_id: int, minutes_ago: float) -> None:
    with session_scope() as session:
        session.get(Conversation, conversation_id).updated_at = \
            utcnow() - timedelta(minutes=minutes_ago)


def test_the_inbox_lists_conversations_newest_activity_first(admin):
    older = make_conversation(phone="5511900000001", name="Older")
    newer = make_conversation(phone="5511900000002", name="Newer")
    _touch(older, 10)
    _touch(newer, 1)
    page = admin.get("/").get_data(as_text=True)
    assert page.index("Newer") < page.index("Older")
    assert "Oi, tudo bem?" in page


def test_the_inbox_filters_by_state_instance_and_search(admin):
    bot = make_conversation(phone="5511900000001", name="Bruna", instance="loja-a")
    paused = make_conversation(phone="5511900000002", name="Paulo", instance="loja-b",
                               messages=(("customer", "quero trocar o tamanho"),))
    failed = make_conversation(phone="5511900000003", name="Fabio")
    _failed_run(failed)
    post_form(admin, f"/conversations/{paused}/take-over")

    def names(query: str) -> set[str]:
        html = admin.get(f"/?{query}&partial=1").get_data(as_text=True)
        return {name for name in ("Bruna", "Paulo", "Fabio") if name in html}

    assert names("state=paused") == {"Paulo"}
    assert names("state=bot") == {"Bruna", "Fabio"}
    assert names("state=failed") == {"Fabio"}
    assert names("instance=loja-a") == {"Bruna"}
    assert names("q=trocar") == {"Paulo"}
    assert names("q=900000003") == {"Fabio"}
    assert names("q=bru") == {"Bruna"}
    assert bot


def test_the_inbox_pages_by_keyset_without_repeating_or_skipping(admin):
    from zapreply.actions import inbox

    ids = [make_conversation(phone=f"55119000000{n:02d}", name=f"C{n:02d}") for n in range(60)]
    for age, conversation_id in enumerate(reversed(ids)):
        _touch(conversation_id, age)
    first = admin.get("/").get_data(as_text=True)
    assert first.count('class="conv ') == inbox.PAGE_SIZE
    cursor = first.split("before=", 1)[1].split('"', 1)[0].replace("&#43;", "+")
    second = admin.get(f"/?before={cursor}").get_data(as_text=True)
    assert second.count('class="conv ') == 10
    assert "C09" in second and "C10" not in second and "C59" in first


def test_bad_inbox_filters_answer_400_with_a_message(admin):
    for query, message in (("state=sleeping", "'state' must be one of"),
                           ("before=yesterday", "not a cursor"),
                           ("config=abc", "'config' must be a positive whole number"),
                           ("q=" + "x" * 101, "at most 100")):
        response = admin.get(f"/?{query}")
        assert response.status_code == 400, query
        assert message in html.unescape(response.get_data(as_text=True)), query


def test_a_conversation_shows_its_transcript_and_each_reply_s_run(admin):
    conversation_id = make_conversation(messages=(("customer", "Qual o preço?"),
                                                  ("assistant", "Custa R$ 10.")))
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="sent", attempts=1)
        session.add(run)
        session.flush()
        for message in session.scalars(select(Message)):
            message.reply_run_id = run.id
        events.record(session, EventType.LLM_COMPLETED, conversation_id=conversation_id,
                      run_id=run.id, model="openai/stub-model", prompt_tokens=42,
                      completion_tokens=7, cost=0.00012, latency_ms=850.0)
        events.record(session, EventType.TOOL_CALLED, conversation_id=conversation_id,
                      run_id=run.id, name="consultar_preco", arguments={"produto": "camisa"},
                      result="R$ 10")
    page = admin.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    for expected in ("Qual o preço?", "Custa R$ 10.", "openai/stub-model", "42 + 7 tokens",
                     "$0.00012", "850 ms", "consultar_preco", "camisa", "✓ sent"):
        assert expected in page, expected


def test_a_missing_conversation_is_404_and_a_bad_id_never_500(admin):
    assert admin.get("/conversations/999999").status_code == 404
    assert admin.get("/conversations/abc").status_code == 404
    assert post_form(admin, "/conversations/999999/take-over").status_code == 404


def test_taking_over_pauses_the_bot_in_the_operator_s_name_and_giving_back_resumes(admin):
    conversation_id = make_conversation()
    response = post_form(admin, f"/conversations/{conversation_id}/take-over",
                         {"minutes": "45"})
    assert response.status_code == 303
    conversation = _conversation(conversation_id)
    assert conversation.status == "paused"
    assert timedelta(minutes=44) < conversation.paused_until - utcnow() <= timedelta(minutes=45)
    assert _events(EventType.CONVERSATION_PAUSED)[0].payload["actor"] == "operator:ana"
    assert "Paused by a person" in admin.get(f"/conversations/{conversation_id}") \
        .get_data(as_text=True)

    post_form(admin, f"/conversations/{conversation_id}/give-back")
    assert _conversation(conversation_id).status == "active"
    assert _events(EventType.CONVERSATION_RESUMED)[0].payload["actor"] == "operator:ana"


def test_taking_over_with_bad_minutes_is_400_and_pauses_nothing(admin):
    conversation_id = make_conversation()
    for minutes in ("soon", "-5", "0", str(10**9)):
        response = post_form(admin, f"/conversations/{conversation_id}/take-over",
                             {"minutes": minutes})
        assert response.status_code == 400, minutes
    assert _conversation(conversation_id).status == "active"
    assert _events(EventType.CONVERSATION_PAUSED) == []


def test_writing_as_the_business_records_it_pauses_the_bot_and_queues_the_send(admin, wuzapi):
    config_id = make_config(wuzapi.url, options={"human_pause_minutes": 20})
    conversation_id = make_conversation(config_id=config_id)
    response = post_form(admin, f"/conversations/{conversation_id}/write",
                         {"text": "  Oi Maria, aqui é a Ana da loja.  "})
    assert response.status_code == 303
    with session_scope() as session:
        message = session.scalar(select(Message).where(Message.role == "business"))
        assert message.content == "Oi Maria, aqui é a Ana da loja."
        assert message.status == "pending" and message.wa_message_id.startswith("3EB0")
        assert message.extra["operator"] == "operator:ana"
    conversation = _conversation(conversation_id)
    assert conversation.status == "paused" and conversation.pause_reason == "human took over"
    assert timedelta(minutes=19) < conversation.paused_until - utcnow() <= timedelta(minutes=20)
    assert _events(EventType.BUSINESS_MESSAGE_QUEUED)[0].payload == {
        "actor": "operator:ana", "message_id": message.id}
    assert queued_tasks() == [SEND_BUSINESS]


def test_writing_keeps_an_open_ended_pause_open_ended(admin, wuzapi):
    conversation_id = make_conversation(config_id=make_config(wuzapi.url))
    post_form(admin, f"/conversations/{conversation_id}/take-over")
    post_form(admin, f"/conversations/{conversation_id}/write", {"text": "Já volto"})
    assert _conversation(conversation_id).paused_until is None


def test_an_empty_or_too_long_message_is_400_and_nothing_is_written(admin, wuzapi):
    conversation_id = make_conversation(config_id=make_config(wuzapi.url))
    assert post_form(admin, f"/conversations/{conversation_id}/write",
                     {"text": "   "}).status_code == 400
    assert post_form(admin, f"/conversations/{conversation_id}/write",
                     {"text": "x" * 4097}).status_code == 400
    with session_scope() as session:
        assert session.scalars(select(Message).where(Message.role == "business")).all() == []
    assert _conversation(conversation_id).status == "active"
    assert queued_tasks() == []


def test_writing_without_a_config_for_the_instance_is_409(admin):
    conversation_id = make_conversation(instance="sem-config")
    response = post_form(admin, f"/conversations/{conversation_id}/write", {"text": "Oi"})
    assert response.status_code == 409
    assert "no workflow config" in response.get_data(as_text=True)


def test_replaying_a_failed_run_reopens_it_and_queues_a_reply(admin):
    conversation_id = make_conversation()
    run_id = _failed_run(conversation_id)
    page = admin.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    assert "llm: RateLimitError after 5 attempts" in page and f"Replay run #{run_id}" in page
    assert post_form(admin, f"/runs/{run_id}/replay").status_code == 303
    with session_scope() as session:
        assert session.get(ReplyRun, run_id).status == "running"
    assert _events(EventType.RUN_REPLAYED)[0].payload["actor"] == "operator:ana"
    assert queued_tasks() == [REPLY]
    # Twice: the run is no longer failed.
    assert post_form(admin, f"/runs/{run_id}/replay").status_code == 409


def test_a_fresh_session_marks_the_newest_message_as_the_restart(admin):
    conversation_id = make_conversation(messages=(("customer", "a"), ("assistant", "b")))
    assert post_form(admin, f"/conversations/{conversation_id}/fresh-session").status_code == 303
    with session_scope() as session:
        newest = session.scalar(select(Message).order_by(Message.id.desc()).limit(1))
        assert newest.extra["reset"] is True and newest.content == "b"
    assert _events(EventType.SESSION_RESET)[0].payload["actor"] == "operator:ana"
    assert "fresh session" in admin.get(f"/conversations/{conversation_id}").get_data(as_text=True)


def test_the_export_is_json_and_a_readable_transcript(admin):
    conversation_id = make_conversation(messages=(("customer", "Oi"), ("assistant", "Olá!")))
    data = json.loads(admin.get(f"/conversations/{conversation_id}/export.json").data)
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("customer", "Oi"), ("assistant", "Olá!")]
    text = admin.get(f"/conversations/{conversation_id}/export.txt")
    assert text.headers["Content-Disposition"].endswith('.txt"')
    body = text.get_data(as_text=True)
    assert "Customer: Oi" in body and "Bot: Olá!" in body
    assert [e.payload["actor"] for e in _events(EventType.CONVERSATION_EXPORTED)] == [
        "operator:ana", "operator:ana"]
    assert admin.get(f"/conversations/{conversation_id}/export.pdf").status_code == 400


def test_an_image_shows_whatsapps_thumbnail_with_its_caption_once_its_bytes_are_gone(admin):
    conversation_id = make_conversation(messages=(("customer", "Segue a foto do produto"),
                                                  ("customer", "e esta outra")))
    with session_scope() as session:
        first, second = session.scalars(select(Message).order_by(Message.id))
        first.media_type = second.media_type = "image"
        first.extra = {"media": {"mimetype": "image/jpeg", "thumbnail": JPEG_THUMBNAIL}}
        second.extra = {"media": {"mimetype": "image/jpeg"}}  # from before thumbnails were kept
    page = admin.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    assert page.count("<img ") == 1
    assert f'src="data:image/jpeg;base64,{JPEG_THUMBNAIL}"' in page
    assert 'alt="Preview of the image sent: Segue a foto do produto"' in page
    placeholder = page.split('data-message="', 3)[2]
    assert "Image" in placeholder and "e esta outra" in placeholder


def test_a_long_conversation_shows_its_newest_messages_and_pages_back_to_older_ones(admin):
    from zapreply.actions.transcripts import TRANSCRIPT_LIMIT

    conversation_id = make_conversation(messages=tuple(
        ("customer", f"mensagem {n:03d}.") for n in range(TRANSCRIPT_LIMIT + 5)))
    newest = admin.get(f"/conversations/{conversation_id}").get_data(as_text=True)
    assert newest.count('class="msg ') == TRANSCRIPT_LIMIT
    assert "mensagem 005." in newest and "mensagem 004." not in newest
    assert 'data-live="conversation"' in newest
    older_link = newest.split("← Older messages", 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
    older = admin.get(html.unescape(older_link)).get_data(as_text=True)
    assert older.count('class="msg ') == 5
    assert "mensagem 000." in older and "mensagem 005." not in older
    assert "← Older messages" not in older and "Newest messages →" in older
    assert 'data-live="conversation"' not in older  # a page of the past does not follow along
    assert admin.get(f"/conversations/{conversation_id}?before=x").status_code == 400
