"""Workflow configs: create, change, rotate the webhook secret, delete, list, get.

Values arrive as the admin API's JSON body or the CLI's flags turned into the same dict; each
is validated here (zapreply.rules.configs, then the columns' lengths), so neither front door
can store what the other would refuse.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zapreply.actions.errors import Invalid, NotFound
from zapreply.rules import configs
from zapreply.storage import events, knowledge
from zapreply.storage.events import EventType
from zapreply.storage.models import WorkflowConfig


def create_config(session: Session, data: Any, *, actor: str | None = None) -> WorkflowConfig:
    """A new config; with `actor`, a `config.created` event names who made it."""
    values = _validated(data, partial=False)
    if values["send"]["token"] == configs.MASK:
        raise Invalid("'send.token' must be the real token, not the mask GET shows")
    config = WorkflowConfig()
    _apply(config, values)
    session.add(config)
    session.flush()
    if actor is not None:
        events.record(session, EventType.CONFIG_CREATED, actor=actor, workflow_config_id=config.id)
    return config


def update_config(session: Session, config_id: int, data: Any, *,
                  actor: str | None = None) -> WorkflowConfig:
    """Change the fields given; `send` merges too, so changing base_url alone keeps driver
    and token (the token then stays only with its host: zapreply.rules.configs.apply). With
    `actor`, a `config.updated` event names who, and which fields (never their values)."""
    config = get_config(session, config_id, for_update=True)
    if isinstance(data, dict) and isinstance(data.get("send"), dict):
        stored = {**(config.send or {}), "token": configs.MASK}
        data = {**data, "send": {**stored, **data["send"]}}
    values = _validated(data, partial=True)
    _apply(config, values)
    session.flush()
    if actor is not None:
        events.record(session, EventType.CONFIG_UPDATED, actor=actor, workflow_config_id=config.id,
                      fields=sorted(values))
    # A new knowledge_language: the passages are indexed in it at once (a PostgreSQL search
    # in one language finds nothing indexed in another).
    knowledge.reindex(session, config.id,
                      configs.options_of(config).knowledge_language or "portuguese")
    return config


def rotate_webhook_secret(session: Session, config_id: int, *,
                          actor: str | None = None) -> WorkflowConfig:
    """A new webhook_path for WuzAPI; the old one gets 401 from then on. With `actor`, a
    `config.secret_rotated` event names who (never the secret)."""
    config = get_config(session, config_id, for_update=True)
    configs.rotate_webhook_secret(config)
    session.flush()
    if actor is not None:
        events.record(session, EventType.CONFIG_SECRET_ROTATED, actor=actor,
                      workflow_config_id=config.id)
    return config


def delete_config(session: Session, config_id: int) -> None:
    session.delete(get_config(session, config_id, for_update=True))
    session.flush()


def list_configs(session: Session, *, instance: str | None = None) -> list[WorkflowConfig]:
    statement = select(WorkflowConfig).order_by(WorkflowConfig.id)
    if instance is not None:
        statement = statement.where(WorkflowConfig.instance == instance)
    return list(session.scalars(statement).all())


def get_config(session: Session, config_id: int, *, for_update: bool = False) -> WorkflowConfig:
    config = session.get(WorkflowConfig, config_id, with_for_update=for_update)
    if config is None:
        raise NotFound(f"workflow config {config_id} not found")
    return config


def _validated(data: Any, *, partial: bool) -> dict[str, Any]:
    try:
        values = configs.validate(data, partial=partial)
    except configs.InvalidConfig as exc:
        raise Invalid(str(exc)) from None
    columns = WorkflowConfig.__table__.c
    for name, value in values.items():
        length = getattr(columns[name].type, "length", None) if name in columns else None
        if isinstance(value, str) and length is not None and len(value) > length:
            raise Invalid(f"'{name}' must be at most {length} characters")
    return values


def _apply(config: WorkflowConfig, values: dict[str, Any]) -> None:
    try:
        configs.apply(config, values)
    except configs.InvalidConfig as exc:
        # Found only against the stored config: a masked token or tool header with nothing
        # stored behind it, or one moved to another host.
        raise Invalid(str(exc)) from None
