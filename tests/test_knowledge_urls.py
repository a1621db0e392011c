"""Knowledge documents read from a URL, on PostgreSQL and on SQLite: added through the running
receiver's admin API, fetched by a real worker's refresher from a local https site, searched
in a reply, fetched again when the page changed, kept when a fetch fails, refused when the URL
leads to a local address that is not allowed; bad input refused at once; two refreshers never
fetch one document twice; an upload turns a URL document into a plain one."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, fixture_json, running_worker, wait_until_idle
from tests.e2e import post
from tests.factories import make_config
from tests.knowledge_site import Site
from tests.processes import Receiver, free_port
from zapreply import cli
from zapreply.actions import documents, knowledge, knowledge_urls
from zapreply.actions.errors import Invalid
from zapreply.settings import get_settings
from zapreply.storage import knowledge as store
from zapreply.storage.db import session_scope
from zapreply.storage.models import Event, KnowledgeDocument, utcnow

CUSTOMER = "5511900000002@s.whatsapp.net"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PRICES_V1 = ("<html><head><title>Preços</title><style>p{}</style></head><body>"
             "<h1>Tabela de preços</h1><p>O corte de cabelo custa 45 reais.</p></body></html>")
PRICES_V2 = ("<html><body><h1>Tabela de preços</h1>"
             "<p>O corte de cabelo custa 50 reais desde dezembro.</p></body></html>")


@pytest.fixture
def site(tmp_path_factory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("site"))
    yield running
    running.close()


def until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not get there in time")
        time.sleep(0.05)
    return value


def knowledge_events(kind: str, document_id: int) -> list[dict]:
    with session_scope() as session:
        return [e.payload for e in session.query(Event).filter(Event.type == kind)
                .order_by(Event.id) if e.payload.get("document_id") == document_id]


def customer_says(receiver: str, text: str) -> None:
    body = fixture_json("message_text.json")
    body["event"]["Info"].update(ID=f"3A{uuid.uuid4().hex[:18].upper()}", Chat=CUSTOMER,
                                 Sender=CUSTOMER)
    body["event"]["Message"] = {"conversation": text}
    assert post(receiver, json.dumps(body).encode()).json()["status"] == "queued"


@pytest.mark.usefixtures("database")
def test_a_page_added_by_its_url_is_fetched_searched_refetched_and_kept_when_a_fetch_fails(
    base_env, tmp_path_factory, wuzapi, site
):
    site.serve("/precos", PRICES_V1)
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        with running_worker(base_env, tmp_path_factory, name="knowledge-urls",
                            DATABASE_URL=env["DATABASE_URL"], SSL_CERT_FILE=str(site.cert),
                            MEDIA_ALLOWED_HOSTS=f"https://127.0.0.1:{site.port}",
                            KNOWLEDGE_REFRESH_INTERVAL_SECONDS="0.2"):
            config_id = make_config(wuzapi.url)
            api = f"{receiver.url}/api/workflow-configs/{config_id}/knowledge"

            added = httpx.post(api, headers=ADMIN, json={
                "url": site.url("/precos"), "title": "Preços", "refresh_hours": 12})
            assert added.status_code == 201, added.text
            pending = added.json()
            assert (pending["source_url"], pending["refresh_hours"], pending["chars"],
                    pending["passages"], pending["fetched_at"]) == (
                site.url("/precos"), 12, 0, 0, None)
            document = f"{api}/{pending['id']}"

            def fetched(count: int) -> Callable[[], Any]:
                return lambda: len(knowledge_events("knowledge.fetched", pending["id"])) >= count

            until(fetched(1))
            shown = httpx.get(document, headers=ADMIN).json()
            assert "O corte de cabelo custa 45 reais." in shown["content"]
            assert "{}" not in shown["content"] and shown["fetch_error"] is None
            assert shown["fetched_at"] is not None and shown["kind"] == "html"
            # Next in refresh_hours.
            assert 11.9 * 3600 < (_at(shown["next_fetch_at"]) - _at(shown["fetched_at"])) \
                .total_seconds() <= 12 * 3600

            # The answer's paragraphs are messages of their own (split_paragraphs).
            customer_says(receiver.url, "#search quanto custa o corte de cabelo")
            wuzapi.wait_for(lambda sent: any("custa 45 reais" in r["body"]["Body"]
                                             for r in sent), timeout=30)
            wait_until_idle()
            bodies = [r["body"]["Body"] for r in wuzapi.sent()]
            assert bodies[0] == "Conhecimento: From the business's documents:"
            assert bodies[1].startswith("[Preços] (passage ")

            # Fetched again on request: the page changed.
            site.serve("/precos", PRICES_V2)
            assert httpx.post(f"{document}/refresh", headers=ADMIN).status_code == 200
            until(fetched(2))
            shown = httpx.get(document, headers=ADMIN).json()
            assert "custa 50 reais desde dezembro" in shown["content"]
            assert "45 reais" not in shown["content"]

            # The same page again: nothing re-indexed.
            assert httpx.post(f"{document}/refresh", headers=ADMIN).status_code == 200
            until(fetched(3))

            # The site fails: the text stays, the reason is shown, the next try is sooner.
            site.serve("/precos", "down", status=503, content_type="text/plain")
            assert httpx.post(f"{document}/refresh", headers=ADMIN).status_code == 200
            [failure] = until(lambda: knowledge_events("knowledge.fetch_failed", pending["id"]))
            shown = httpx.get(document, headers=ADMIN).json()
            assert failure["reason"] == shown["fetch_error"] == "the server answered 503"
            assert "custa 50 reais desde dezembro" in shown["content"]
            assert shown["passages"] >= 1
            assert (_at(shown["next_fetch_at"]) - utcnow()).total_seconds() <= 3600

            # The same site by a name that resolves to loopback, not listed: never connected to.
            local = httpx.post(api, headers=ADMIN, json={"url": site.url("/interno", "localhost"),
                                                         "refresh_hours": 0}).json()
            [refused] = until(lambda: knowledge_events("knowledge.fetch_failed", local["id"]))
            assert "private or local addresses" in refused["reason"]
            shown = httpx.get(f"{api}/{local['id']}", headers=ADMIN).json()
            assert shown["fetch_error"] == refused["reason"]
            assert (shown["content"], shown["passages"], shown["refresh_hours"]) == ("", 0, None)

            # Redirects: followed within the origin, refused to another host.
            site.serve("/precos-2027", PRICES_V2)
            site.redirect("/antigo", "/precos-2027")
            site.redirect("/fora", site.url("/interno", "localhost"))
            moved = httpx.post(api, headers=ADMIN, json={"url": site.url("/antigo")}).json()
            away = httpx.post(api, headers=ADMIN, json={"url": site.url("/fora")}).json()
            [followed] = until(lambda: knowledge_events("knowledge.fetched", moved["id"]))
            assert followed["passages"] == 1
            [elsewhere] = until(lambda: knowledge_events("knowledge.fetch_failed", away["id"]))
            assert elsewhere["reason"].startswith("redirected to another host")
            wait_until_idle()
    finally:
        receiver.stop()

    first, second, same = knowledge_events("knowledge.fetched", pending["id"])
    assert (first["changed"], second["changed"], same["changed"]) == (True, True, False)
    assert first["passages"] == 1 and first["chars"] > 0
    assert "/interno" not in site.requested
    assert site.requested.count("/precos") == 4
    assert site.requested.count("/precos-2027") == 1


def _at(value: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(value)


@pytest.mark.usefixtures("database")
def test_a_url_is_refused_at_once_unless_https_with_a_host_and_a_sane_schedule(
    base_env, tmp_path_factory, capsys
):
    env = {**os.environ, **base_env, "DATABASE_URL": get_settings().database_url}
    receiver = Receiver(env, free_port(), tmp_path_factory.mktemp("receiver") / "receiver.log")
    try:
        config_id = make_config()
        api = f"{receiver.url}/api/workflow-configs/{config_id}/knowledge"
        cases = [
            ({"url": "http://example.com/precos"}, "https://"),
            ({"url": "https:///precos"}, "must name a host"),
            ({"url": "https://example.com/" + "a" * 2000}, "at most 2000 characters"),
            ({"url": "https://user:secret@example.com/"}, "user name or password"),
            ({"url": "https://example.com/", "refresh_hours": 721}, "'refresh_hours'"),
            ({"url": "https://example.com/", "refresh_hours": 1.5}, "'refresh_hours'"),
            ({"url": "https://example.com/", "refresh_hours": "24"}, "'refresh_hours'"),
            ({"url": "https://example.com/", "refresh_hours": True}, "'refresh_hours'"),
            ({"url": "https://example.com/", "schedule": 1}, "unknown field(s): schedule"),
        ]
        for body, reason in cases:
            answer = httpx.post(api, headers=ADMIN, json=body)
            assert answer.status_code == 400, body
            assert reason in answer.json()["error"], (body, answer.text)
            assert "secret" not in answer.text
        assert httpx.get(api, headers=ADMIN).json()["documents"] == []
    finally:
        receiver.stop()

    assert cli.main(["knowledge", "add-url", str(config_id), "--url", "http://x.com/"]) == 2
    assert "https://" in capsys.readouterr().err
    assert cli.main(["knowledge", "add-url", str(config_id), "--url", "https://x.com/a",
                     "--refresh-hours", "0"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["source_url"], made["refresh_hours"], made["title"]) == (
        "https://x.com/a", None, "x.com/a")
    assert made["next_fetch_at"] is not None


@pytest.mark.usefixtures("database")
def test_two_refreshers_never_claim_the_same_document() -> None:
    config_id = make_config()
    with session_scope() as session:
        ids = [knowledge.add_document(session, config_id, documents.from_url(
            f"https://example.com/{n}")).id for n in range(3)]
    winners: list[tuple[int, int]] = []
    start = threading.Barrier(4)

    def refresher(name: int) -> None:
        start.wait()
        for document_id in ids:
            with session_scope() as session:
                if store.claim_fetch(session, document_id, utcnow(), knowledge_urls.LEASE):
                    winners.append((document_id, name))

    threads = [threading.Thread(target=refresher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(document_id for document_id, _ in winners) == ids
    with session_scope() as session:
        # Claimed: not due again until the lease ends.
        assert store.due_for_fetch(session, utcnow(), 10) == []
        assert store.due_for_fetch(session, utcnow() + knowledge_urls.LEASE * 2, 10) == ids


@pytest.mark.usefixtures("database")
def test_an_upload_over_a_url_document_makes_it_a_plain_document() -> None:
    config_id = make_config()
    with session_scope() as session:
        row = knowledge.add_document(session, config_id,
                                     documents.from_url("https://example.com/precos"))
        document_id = row.id
    with session_scope() as session:
        row = knowledge.replace_document(session, config_id, document_id,
                                         documents.from_text("Preços", "O corte custa 45."))
        view = knowledge.shown(session, row)
    assert (view["source_url"], view["refresh_hours"], view["next_fetch_at"]) == (None, None, None)
    assert (view["kind"], view["passages"]) == ("text", 1)
    with session_scope() as session:
        assert store.due_for_fetch(session, utcnow(), 10) == []
        with pytest.raises(Invalid, match="not added from a URL"):
            knowledge.refresh_document(session, config_id, document_id)
        assert session.get(KnowledgeDocument, document_id).content == "O corte custa 45."
