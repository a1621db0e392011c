"""The runs page: failed and retrying runs with their reasons; replaying one or many."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import queued_tasks
from tests.console_app.conftest import make_conversation, post_form
from tests.console_app.test_conversations import _failed_run
from zapreply.broker.queue import REPLY
from zapreply.storage.db import session_scope
from zapreply.storage.models import ReplyRun, utcnow


def _retrying_run(conversation_id: int) -> int:
    with session_scope() as session:
        run = ReplyRun(conversation_id=conversation_id, status="running", attempts=2,
                       error="wuzapi answered 503", next_attempt_at=utcnow())
        session.add(run)
        session.flush()
        return run.id


def test_the_runs_page_lists_failed_and_retrying_runs_with_their_reasons(agent):
    failed = _failed_run(make_conversation(phone="5511900000001", name="Fabio"),
                         error="llm: AuthenticationError (permanent)")
    retrying = _retrying_run(make_conversation(phone="5511900000002", name="Rita"))
    with session_scope() as session:
        session.add(ReplyRun(conversation_id=make_conversation(phone="5511900000003"),
                             status="sent", attempts=1))
    page = agent.get("/runs").get_data(as_text=True)
    assert f"#{failed}" in page and f"#{retrying}" in page
    assert "AuthenticationError (permanent)" in page and "wuzapi answered 503" in page
    assert page.count("<tr class=\"run-") == 2
    only_failed = agent.get("/runs?show=failed").get_data(as_text=True)
    assert f"#{failed}" in only_failed and f"#{retrying}" not in only_failed
    only_retrying = agent.get("/runs?show=retrying").get_data(as_text=True)
    assert f"#{retrying}" in only_retrying and f"#{failed}" not in only_retrying


def test_replaying_several_runs_reopens_each_and_reports_the_ones_that_cannot_be(agent):
    first = _failed_run(make_conversation(phone="5511900000001"))
    second = _failed_run(make_conversation(phone="5511900000002"))
    retrying = _retrying_run(make_conversation(phone="5511900000003"))
    response = post_form(agent, "/runs/replay", {"run": [str(first), str(second),
                                                          str(retrying)]}, page="/runs")
    assert response.status_code == 303
    with session_scope() as session:
        statuses = dict(session.execute(select(ReplyRun.id, ReplyRun.status)).all())
    assert statuses[first] == statuses[second] == "running"
    assert queued_tasks() == [REPLY, REPLY]
    page = agent.get("/runs").get_data(as_text=True)
    assert "2 runs replayed." in page and f"Run {retrying} not replayed" in page


def test_replaying_nothing_or_a_bad_id_is_400(agent):
    assert post_form(agent, "/runs/replay", {}, page="/runs").status_code == 400
    assert post_form(agent, "/runs/replay", {"run": "x1"}, page="/runs").status_code == 400
    assert agent.get("/runs?show=everything").status_code == 400
    assert agent.get("/runs?before=-3").status_code == 400
