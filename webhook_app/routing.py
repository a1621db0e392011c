"""Which config owns an instance, cached briefly; and which deliveries this process just queued.

The cache keeps the receiver off the database for nearly every request while a config change
still applies within CONFIG_CACHE_SECONDS.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from zapreply import configs, groups
from zapreply.db import session_factory
from zapreply.settings import get_settings


@dataclass(frozen=True)
class ConfigRef:
    id: int
    instance: str
    # Some active config on the instance answers group chats (zapreply.groups): group
    # messages go on to the worker instead of being dropped here.
    groups: bool = False


# workflow_configs.instance is a String(200).
_MAX_INSTANCE_LENGTH = 200

_lock = threading.Lock()
_configs: dict[tuple[str, ...], tuple[float, ConfigRef | None]] = {}


def active_config(candidates: list[str]) -> ConfigRef | None:
    now = time.monotonic()
    # Only names that reached the database are cached, so a hit needs no further checks.
    cached = _configs.get(tuple(candidates))
    if cached is not None and cached[0] > now:
        return cached[1]
    # A name no config can have must not reach the database: NUL makes PostgreSQL refuse the
    # query (a 503, and WuzAPI retrying a client's mistake) and a lone surrogate cannot even be
    # encoded.
    key = tuple(name for name in candidates if _storable_name(name))
    if not key:
        return None
    cached = _configs.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    with session_factory()() as session:
        row = configs.find_active(session, list(key))
        ref = ConfigRef(row.id, row.instance, groups.instance_takes_groups(session, row.instance)) \
            if row is not None else None
    with _lock:
        if len(_configs) > 10_000:
            _configs.clear()
        _configs[key] = (now + get_settings().config_cache_seconds, ref)
    return ref


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


def clear_cache() -> None:
    with _lock:
        _configs.clear()
        _recent.clear()


# WuzAPI retries a delivery that timed out and may send one twice at once. The worker's
# unique constraint is what guarantees one reply; this only spares the queue the obvious repeats
# that reach the same process.
_RECENT_MAX = 20_000
_recent: OrderedDict[tuple[str, str], None] = OrderedDict()


def recently_enqueued(instance: str, wa_message_id: str) -> bool:
    return (instance, wa_message_id) in _recent


def remember_enqueued(instance: str, wa_message_id: str) -> None:
    with _lock:
        _recent[(instance, wa_message_id)] = None
        if len(_recent) > _RECENT_MAX:
            _recent.popitem(last=False)
