"""The admin API's knowledge routes: documents as JSON or multipart files, listed, shown,
replaced and deleted; FAQ entries; every bad document a 400 with its reason and nothing
stored."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from tests.admin_api.test_admin import create_config
from tests.documents import DELIVERY, RETURNS, pdf_with_text
from zapreply.actions import documents
from zapreply.storage.db import session_scope
from zapreply.storage.models import KnowledgeDocument, KnowledgePassage


def stored_documents() -> int:
    with session_scope() as session:
        return (session.scalar(select(func.count()).select_from(KnowledgeDocument))
                + session.scalar(select(func.count()).select_from(KnowledgePassage)))


def test_documents_are_added_as_json_or_files_listed_shown_replaced_and_deleted(
    client, admin_headers
):
    config_id = create_config(client, admin_headers)["id"]
    base = f"/api/workflow-configs/{config_id}/knowledge"

    created = client.post(base, json={"title": "Entregas", "content": DELIVERY},
                          headers=admin_headers)
    assert created.status_code == 201, created.get_json()
    document = created.get_json()
    assert (document["title"], document["kind"], document["passages"]) == ("Entregas", "text", 1)
    assert created.headers["Location"] == f"{base}/{document['id']}"

    upload = client.post(base, data={"file": (io.BytesIO(pdf_with_text("Tabela de precos")),
                                              "precos.pdf", "application/pdf")},
                         headers=admin_headers, content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    assert (upload.get_json()["title"], upload.get_json()["kind"]) == ("precos.pdf", "pdf")

    listed = client.get(base, headers=admin_headers).get_json()["documents"]
    assert [d["title"] for d in listed] == ["Entregas", "precos.pdf"]
    shown = client.get(f"{base}/{document['id']}", headers=admin_headers).get_json()
    assert shown["content"] == DELIVERY

    replaced = client.put(f"{base}/{document['id']}",
                          data={"file": (io.BytesIO(RETURNS.encode()), "trocas.md"),
                                "title": "Trocas"},
                          headers=admin_headers, content_type="multipart/form-data")
    assert replaced.status_code == 200, replaced.get_json()
    assert (replaced.get_json()["title"], replaced.get_json()["kind"]) == ("Trocas", "markdown")
    assert client.get(f"{base}/{document['id']}",
                      headers=admin_headers).get_json()["content"] == RETURNS

    assert client.delete(f"{base}/{document['id']}", headers=admin_headers).status_code == 204
    assert client.get(f"{base}/{document['id']}", headers=admin_headers).status_code == 404
    assert [d["title"] for d in client.get(base, headers=admin_headers).get_json()[
        "documents"]] == ["precos.pdf"]


@pytest.mark.parametrize("kwargs, reason", [
    ({"json": {"title": "Vazio", "content": "   "}}, "document is empty"),
    ({"json": {"title": "", "content": "x"}}, "'title' must be a non-empty string"),
    ({"json": {"title": "T", "content": "x", "url": "https://x.example"}},
     "unknown field(s): content"),
    ({"json": ["T", "x"]}, "body must be a JSON object"),
    ({"data": "{not json", "content_type": "application/json"}, "body is not valid JSON"),
    ({"data": {"file": (io.BytesIO(b"%PDF-1.4 broken"), "ruim.pdf")},
      "content_type": "multipart/form-data"}, "unreadable PDF"),
    ({"data": {"file": (io.BytesIO(b"\x89PNG\r\n"), "foto.png")},
      "content_type": "multipart/form-data"}, "unsupported document type '.png'"),
    ({"data": {"file": (io.BytesIO(b""), "vazio.txt")},
      "content_type": "multipart/form-data"}, "document is empty"),
    ({"data": {"title": "sem arquivo"}, "content_type": "multipart/form-data"},
     "multipart body must have a 'file' part"),
    ({"data": {"file": (io.BytesIO(b"x" * (documents.MAX_UPLOAD_BYTES + 1)), "grande.txt")},
      "content_type": "multipart/form-data"}, "document too large"),
])
def test_a_bad_document_gets_400_with_its_reason_and_nothing_is_stored(
    client, admin_headers, kwargs, reason
):
    config_id = create_config(client, admin_headers)["id"]
    response = client.post(f"/api/workflow-configs/{config_id}/knowledge",
                           headers=admin_headers, **kwargs)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert stored_documents() == 0


def test_a_missing_config_or_document_is_404_and_a_bad_id_400(client, admin_headers):
    config_id = create_config(client, admin_headers)["id"]
    missing = client.post("/api/workflow-configs/999/knowledge",
                          json={"title": "T", "content": "x"}, headers=admin_headers)
    assert missing.status_code == 404
    assert missing.get_json() == {"error": "workflow config 999 not found"}
    assert client.get(f"/api/workflow-configs/{config_id}/knowledge/7",
                      headers=admin_headers).status_code == 404
    assert client.delete(f"/api/workflow-configs/{config_id}/faq/7",
                         headers=admin_headers).status_code == 404
    assert client.get(f"/api/workflow-configs/{config_id}/knowledge/abc",
                      headers=admin_headers).status_code == 400


def test_the_knowledge_routes_need_the_admin_token(client):
    assert client.get("/api/workflow-configs/1/knowledge").status_code == 401
    assert client.post("/api/workflow-configs/1/faq",
                       json={"question": "Q", "answer": "A"}).status_code == 401


def test_faq_entries_are_added_listed_replaced_and_deleted(client, admin_headers):
    config_id = create_config(client, admin_headers)["id"]
    base = f"/api/workflow-configs/{config_id}/faq"

    created = client.post(base, json={"question": "Abrem domingo?", "answer": "Não."},
                          headers=admin_headers)
    assert created.status_code == 201
    entry_id = created.get_json()["id"]
    bad = client.post(base, json={"question": "Abrem domingo?"}, headers=admin_headers)
    assert bad.status_code == 400
    assert bad.get_json() == {"error": "'answer' must be a non-empty string"}

    changed = client.put(f"{base}/{entry_id}",
                         json={"question": "Abrem no domingo?", "answer": "Só em dezembro."},
                         headers=admin_headers)
    assert changed.get_json()["answer"] == "Só em dezembro."
    assert [(e["question"], e["answer"]) for e in client.get(
        base, headers=admin_headers).get_json()["faq"]] == [("Abrem no domingo?",
                                                             "Só em dezembro.")]
    assert client.delete(f"{base}/{entry_id}", headers=admin_headers).status_code == 204
    assert client.get(base, headers=admin_headers).get_json()["faq"] == []


def test_the_knowledge_options_are_validated_with_the_config(client, admin_headers):
    config_id = create_config(client, admin_headers)["id"]
    for options, reason in [({"knowledge_language": "klingon"}, "must be one of"),
                            ({"knowledge_only": "yes"}, "wrong type"),
                            ({"knowledge_results": 50}, "from 1 to 20"),
                            ({"knowledge_min_similarity": 2}, "from 0 to 1"),
                            ({"embedding_model": " "}, "must not be empty")]:
        response = client.patch(f"/api/workflow-configs/{config_id}",
                                json={"options": options}, headers=admin_headers)
        assert response.status_code == 400, options
        assert reason in response.get_json()["error"]
    ok = client.patch(f"/api/workflow-configs/{config_id}", headers=admin_headers, json={
        "options": {"knowledge_only": True, "embedding_model": "openai/text-embedding-3-small",
                    "knowledge_language": "english"}})
    assert ok.status_code == 200
    assert ok.get_json()["options"]["knowledge_language"] == "english"
