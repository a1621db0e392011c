"""A config's knowledge base through the running system, on PostgreSQL and on SQLite: documents
and an FAQ entry added through the receiver's admin API, a customer's question answered by a
real worker whose model searches them, the search recorded in the run, and `knowledge_only`'s
plain "nothing found"."""

from __future__ import annotations

import io
import json
import os
import uuid

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, fixture_json, running_worker, wait_until_idle
from tests.documents import DELIVERY, RETURNS
from tests.e2e import post
from tests.factories import make_config
from tests.processes import Receiver, free_port
from zapreply.replies import knowledge as search_module
from zapreply.settings import get_settings
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, KnowledgePassage

CUSTOMER = "5511900000001@s.whatsapp.net"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def customer_says(receiver: str, text: str) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=CUSTOMER,
                                 Sender=CUSTOMER)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


def search_events() -> list[dict]:
    with session_scope() as session:
        return [e.payload for e in session.query(Event).filter(Event.type == "tool.called")
                .order_by(Event.id)]


@pytest.mark.usefixtures("database")
def test_the_bot_answers_from_the_documents_added_through_the_admin_api(
    base_env, tmp_path_factory, wuzapi, llm
):
    # The process's database (PostgreSQL, or a fresh SQLite file): receiver and worker share it.
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        with running_worker(base_env, tmp_path_factory, name="knowledge",
                            DATABASE_URL=env["DATABASE_URL"]):
            config_id = make_config(wuzapi.url, options={"knowledge_only": True})
            api = f"{receiver.url}/api/workflow-configs/{config_id}"
            added = httpx.post(f"{api}/knowledge", headers=ADMIN, files={
                "file": ("entregas.md", io.BytesIO(DELIVERY.encode()), "text/markdown")})
            assert added.status_code == 201, added.text
            assert httpx.post(f"{api}/knowledge", headers=ADMIN, json={
                "title": "Trocas", "content": RETURNS}).status_code == 201
            bad = httpx.post(f"{api}/knowledge", headers=ADMIN, files={
                "file": ("ruim.pdf", io.BytesIO(b"%PDF-1.4 nothing"), "application/pdf")})
            assert bad.status_code == 400 and "unreadable PDF" in bad.json()["error"]
            assert httpx.post(f"{api}/faq", headers=ADMIN, json={
                "question": "Vocês abrem no domingo?",
                "answer": "Não, só de segunda a sábado."}).status_code == 201

            # Each answer in full before the next question (split_paragraphs: a reply with
            # blank lines is several messages), so each is a turn of its own.
            customer_says(receiver.url, "#search taxa de entrega para Campinas")
            wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=30)
            customer_says(receiver.url, "#search aceitam criptomoedas")
            wuzapi.wait_for(lambda sent: len(sent) >= 3, timeout=30)
            customer_says(receiver.url, "#search abrem domingo")
            wuzapi.wait_for(lambda sent: len(sent) >= 5, timeout=30)
            wait_until_idle()
    finally:
        receiver.stop()

    replies = [r["body"]["Body"] for r in wuzapi.sent()]
    with session_scope() as session:
        delivery = session.query(KnowledgePassage).filter(
            KnowledgePassage.content == DELIVERY).one().id
    assert replies[0] == "Conhecimento: From the business's documents:"
    assert replies[1] == (f"[entregas.md] (passage {delivery})\n{DELIVERY}")
    assert replies[2] == ("Conhecimento: " + search_module.NOTHING_FOUND + " "
                          + search_module.ONLY_KNOWLEDGE)
    assert replies[3] == "Conhecimento: Approved answers (FAQ), use them as they are:"
    assert replies[4] == "Q: Vocês abrem no domingo?\nA: Não, só de segunda a sábado."

    found, nothing, faq = search_events()
    assert found["name"] == "search_knowledge"
    assert found["arguments"] == {"query": "taxa de entrega para Campinas"}
    assert [p["id"] for p in found["passages"]] == [delivery]
    assert found["passages"][0]["score"] > 0
    assert (nothing["passages"], nothing["relevant"]) == ([], False)
    assert len(faq["faq"]) == 1 and faq["faq"][0]["score"] == 1.0
    # The model was told to keep to the documents.
    system = llm.chat_requests()[0]["body"]["messages"][0]["content"]
    assert "only with what the search_knowledge tool returns" in system
