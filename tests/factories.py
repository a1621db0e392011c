"""Rows the tests start from, written through the ORM as an operator's tools would."""

from __future__ import annotations

from typing import Any

from tests.stubs import MessagesStub
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig

# The instance WuzAPI's sample bodies name (tests/fixtures/wuzapi).
INSTANCE = "loja-teste"
# A messages API nothing listens on, for configs whose replies are never sent.
NOWHERE = "http://127.0.0.1:9"
# Sends unpaced unless a test sets them: a test's few replies would otherwise wait their turn
# (seconds each) behind one another. Pacing has its own tests (tests/test_pacing.py).
UNPACED = {"send_rate_per_minute": None, "min_send_interval_seconds": None}


def make_config(wuzapi: MessagesStub | str = NOWHERE, *, options: dict[str, Any] | None = None,
                **columns: Any) -> int:
    """A workflow config answering through `wuzapi` (the stand-in, or a URL) with `options`;
    its id. `columns` replace the defaults (name, instance, is_active, model, system_prompt,
    send, debounce_seconds, hmac_key)."""
    url = wuzapi.url if isinstance(wuzapi, MessagesStub) else wuzapi
    values: dict[str, Any] = {
        "name": "Loja", "instance": INSTANCE, "is_active": True,
        "model": "openai/stub-model", "system_prompt": "Você é o atendente da Loja.",
        "send": {"driver": "wuzapi", "base_url": url, "token": "secret-user-token"},
        "debounce_seconds": 0.0, "options": {**UNPACED, **(options or {})}, **columns,
    }
    with session_scope() as session:
        config = WorkflowConfig(**values)
        session.add(config)
        session.flush()
        return config.id


def stored_config(config_id: int) -> WorkflowConfig:
    """The config as stored, detached from its session: for what is read off the row (its
    webhook path)."""
    with session_scope() as session:
        config = session.get(WorkflowConfig, config_id)
        session.expunge(config)
        return config
