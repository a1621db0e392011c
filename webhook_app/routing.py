"""Which config owns an instance, cached briefly; and which deliveries the app just queued.

The cache keeps the receiver off the database for nearly every request while a config change
still applies within CONFIG_CACHE_SECONDS.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import select

from zapreply.rules import groups
from zapreply.settings import Settings
from zapreply.storage.db import session_factory
from zapreply.storage.models import WorkflowConfig


@dataclass(frozen=True)
class ConfigRef:
    id: int
    instance: str
    # Some active config on the instance answers group chats (zapreply.rules.groups): group
    # messages go on to the worker instead of being dropped here.
    groups: bool = False


@dataclass(frozen=True)
class Instance:
    """What the receiver knows of one instance name: the config that answers it, and what
    authenticates its webhooks (the secrets and HMAC keys of all its configs, active or not:
    a deactivated bot's webhooks are still answered, `ignored`, rather than refused)."""

    name: str
    config: ConfigRef | None
    webhook_secrets: tuple[str, ...] = ()
    hmac_keys: tuple[str, ...] = ()


# workflow_configs.instance is a String(200).
_MAX_INSTANCE_LENGTH = 200

# WuzAPI retries a delivery that timed out and may send one twice at once. The worker's
# unique constraint is what guarantees one reply; this only spares the queue the obvious repeats
# that reach the same app.
_RECENT_MAX = 20_000


class Routes:
    """What one receiver app remembers: its config lookups, for `cache_seconds`, and the
    deliveries it just queued. Each app has its own (`routes_of`), as it has its own database."""

    def __init__(self, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._instances: dict[str, tuple[float, Instance | None]] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()

    def instances(self, candidates: list[str]) -> list[Instance]:
        """The known instances among `candidates`, in their order."""
        now = time.monotonic()
        found: dict[str, Instance | None] = {}
        missing: list[str] = []
        for name in candidates:
            cached = self._instances.get(name)
            if cached is not None and cached[0] > now:
                found[name] = cached[1]
            elif _storable_name(name):
                # A name no config can have must not reach the database: NUL makes PostgreSQL
                # refuse the query (a 503, and WuzAPI retrying a client's mistake) and a lone
                # surrogate cannot even be encoded.
                missing.append(name)
        if missing:
            loaded = _load(missing)
            expires = now + self.cache_seconds
            with self._lock:
                if len(self._instances) > 10_000:
                    self._instances.clear()
                for name in missing:
                    self._instances[name] = (expires, loaded.get(name))
            found.update((name, loaded.get(name)) for name in missing)
        return [info for name in candidates if (info := found.get(name)) is not None]

    def active_config(self, candidates: list[str]) -> ConfigRef | None:
        """The active config of the first of `candidates` that has one."""
        return next((info.config for info in self.instances(candidates) if info.config), None)

    def recently_enqueued(self, instance: str, wa_message_id: str) -> bool:
        return (instance, wa_message_id) in self._recent

    def remember_enqueued(self, instance: str, wa_message_id: str) -> None:
        with self._lock:
            self._recent[(instance, wa_message_id)] = None
            if len(self._recent) > _RECENT_MAX:
                self._recent.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._instances.clear()
            self._recent.clear()


EXTENSION = "zapreply.routes"


def init_app(app: Flask, settings: Settings) -> Routes:
    routes = Routes(settings.config_cache_seconds)
    app.extensions[EXTENSION] = routes
    return routes


def routes_of(app: Flask) -> Routes:
    return app.extensions[EXTENSION]


def _load(names: list[str]) -> dict[str, Instance]:
    with session_factory()() as session:
        rows = session.execute(
            select(WorkflowConfig.id, WorkflowConfig.instance, WorkflowConfig.is_active,
                   WorkflowConfig.webhook_secret, WorkflowConfig.hmac_key)
            .where(WorkflowConfig.instance.in_(names))
            .order_by(WorkflowConfig.id)
        ).all()
        loaded: dict[str, Instance] = {}
        for name in names:
            own = [row for row in rows if row.instance == name]
            if not own:
                continue
            active = next((row for row in own if row.is_active), None)
            loaded[name] = Instance(
                name=name,
                config=ConfigRef(active.id, name, groups.instance_takes_groups(session, name))
                if active is not None else None,
                webhook_secrets=tuple(row.webhook_secret for row in own if row.webhook_secret),
                hmac_keys=tuple(row.hmac_key for row in own if row.hmac_key),
            )
        return loaded


def _storable_name(name: str) -> bool:
    if len(name) > _MAX_INSTANCE_LENGTH or "\x00" in name:
        return False
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
