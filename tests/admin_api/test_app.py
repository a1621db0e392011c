"""The admin API on its own (`gunicorn 'admin_api:create_app()'`) and its replay route, whose
status follows the action's error type."""

from __future__ import annotations

from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, ReplyRun


def make_run(status: str) -> tuple[int, int]:
    with session_scope() as session:
        conversation = Conversation(instance="loja", chat_jid="5511900000001@s.whatsapp.net",
                                    status="active", lease_token=0)
        session.add(conversation)
        session.flush()
        run = ReplyRun(conversation_id=conversation.id, status=status, error="llm down")
        session.add(run)
        session.flush()
        return run.id, conversation.id


def test_the_admin_api_runs_on_its_own_at_the_same_urls_without_the_webhooks(
        db, base_env, admin_headers) -> None:
    from admin_api import create_app
    from webhook_app.extension import runtime_of

    app = create_app(base_env)
    client = app.test_client()
    try:
        assert client.get("/api/workflow-configs", headers=admin_headers).get_json() == {
            "workflow_configs": []}
        assert client.get("/api/events").status_code == 401
        assert client.post("/webhooks/wuzapi", data=b"{}").status_code == 404
    finally:
        runtime_of(app).database.dispose()


def test_on_its_own_without_a_token_it_answers_503(db, base_env) -> None:
    from admin_api import create_app

    client = create_app({**base_env, "ADMIN_TOKEN": ""}).test_client()

    response = client.delete("/api/contacts/5511900000001", headers={"Authorization": "Bearer "})
    assert response.status_code == 503
    assert response.get_json() == {"error": "admin API disabled: set ADMIN_TOKEN"}


def test_replaying_a_missing_run_is_404_and_a_run_not_failed_409(client, admin_headers) -> None:
    run_id, _ = make_run("sent")

    missing = client.post(f"/api/runs/{run_id + 1}/replay", headers=admin_headers)
    not_failed = client.post(f"/api/runs/{run_id}/replay", headers=admin_headers)

    assert (missing.status_code, missing.get_json()) == (
        404, {"error": f"no run {run_id + 1}"})
    assert not_failed.status_code == 409
    assert "only failed runs can be replayed" in not_failed.get_json()["error"]


def test_replaying_a_failed_run_queues_it(client, admin_headers) -> None:
    run_id, conversation_id = make_run("failed")

    response = client.post(f"/api/runs/{run_id}/replay", headers=admin_headers)

    assert (response.status_code, response.get_json()) == (
        202, {"run_id": run_id, "conversation_id": conversation_id, "status": "queued"})
    with session_scope() as session:
        assert session.get(ReplyRun, run_id).status == "running"
