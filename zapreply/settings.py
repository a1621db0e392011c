"""The one place that reads the environment.

Every knob has a typed helper that fails loudly on a malformed value, so a typo in a deploy
file stops the process at start instead of surfacing as odd behaviour hours later.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class ImproperlyConfigured(ValueError):
    pass


def _str(env: dict[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = _str(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (_str(env, name) or default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class AllowedHost:
    """An entry of MEDIA_ALLOWED_HOSTS. Without a scheme: a host name, or `*.` and a domain
    (any name under it), over https, on port 443 unless one is given; what it resolves to must
    be public. With a scheme (`http://127.0.0.1:9000`): exactly that origin, which may be a
    private address (a MinIO beside the worker)."""

    host: str
    port: int | None = None
    scheme: str | None = None


def _allowed_hosts(env: dict[str, str], name: str, default: str) -> tuple[AllowedHost, ...]:
    raw = _str(env, name, default) or ""
    entries = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        scheme = item.split("://", 1)[0] if "://" in item else None
        try:
            parts = urlsplit(item if scheme else f"//{item}")
            port = parts.port
        except ValueError:
            parts, port = None, None
        host = parts.hostname if parts else None
        wildcard = bool(host) and host.startswith("*.") and "*" not in host[2:] \
            and bool(host[2:].strip(".")) and not scheme
        if (parts is None or not host or scheme not in (None, "http", "https")
                or parts.path not in ("", "/") or parts.query or parts.username
                or ("*" in host and not wildcard)):
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not a host name, '*.domain', 'host:port' or "
                "'scheme://host:port'")
        if scheme and port is None:
            port = 443 if scheme == "https" else 80
        entries.append(AllowedHost(host.rstrip("."), port, scheme))
    return tuple(entries)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    hmac_key: str | None = field(repr=False)
    admin_token: str | None = field(repr=False)
    # Accept webhooks that are neither signed nor posted to a config's secret path: for local
    # experiments only (the receiver warns at start).
    webhook_allow_unsigned: bool
    # Where WuzAPI reaches this receiver: the CLI prints each config's webhook URL under it.
    public_url: str
    max_body_bytes: int
    config_cache_seconds: float
    # Worker side.
    worker_pool: str
    worker_concurrency: int
    # Added to the worker's niceness: on a host it shares with the receiver, saturated
    # workers must not starve the webhooks (WuzAPI would time out and deliver again later).
    worker_nice: int
    llm_timeout_seconds: float
    llm_max_attempts: int
    send_timeout_seconds: float
    send_max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    max_tool_rounds: int
    history_limit: int
    lease_seconds: float
    sweep_interval_seconds: float
    sweep_grace_seconds: float
    # Redis: a task a dead worker held is handed out again after this long (docs/RELIABILITY.md:
    # it bounds recovery). Tasks may run longer (a redelivered copy finds the message recorded
    # or the conversation leased); no countdown may reach it (`longest_countdown_seconds`).
    visibility_timeout_seconds: int
    task_time_limit_seconds: int
    log_level: str
    # Media: base64 characters carried in the task payload (larger media is fetched by the
    # worker), the largest media a worker downloads, and the timeout of a download or a
    # transcription.
    media_inline_max_bytes: int = 2 * 1024 * 1024
    media_max_bytes: int = 25 * 1024 * 1024
    media_timeout_seconds: float = 60.0
    # Messages one reply may send: a model calling send_whatsapp in a loop, or a reply cut
    # into many paragraphs, must not flood the customer (or the number's send quota).
    max_messages_per_run: int = 10
    # /readyz says "degraded" once this many tasks wait in the broker's queue.
    queue_degraded_depth: int = 1000
    # Retention (zapreply.actions.privacy): how often each worker deletes what is past its config's
    # retention_days, and how many rows one of its transactions deletes at most.
    retention_interval_seconds: float = 3600.0
    retention_batch_size: int = 500
    # How often each worker looks for knowledge documents due to be fetched from their URL
    # (zapreply.replies.knowledge_urls).
    knowledge_refresh_interval_seconds: float = 60.0
    # Where media may be fetched from by URL (see AllowedHost).
    media_allowed_hosts: tuple[AllowedHost, ...] = ()
    # Receiver: request headers not all arrived this long after a thread took the connection,
    # or a body this long after its headers, are cut off (the connection closed; a 408).
    webhook_read_timeout_seconds: float = 15.0
    # gunicorn, read by gunicorn.conf.py (command-line flags still win).
    receiver_bind: str = "0.0.0.0:8000"
    receiver_workers: int = 2
    receiver_threads: int = 8
    # How the receiver publishes: "redis" LPUSHes Celery's message itself when the broker is
    # Redis (zapreply.broker.redis_fast_publish), "off" always goes through send_task.
    publish_fast_path: str = "redis"
    # The operator console (console_app): where it listens (gunicorn.conf.py), the URL people
    # open (its cookies are Secure when it is https), and the key that signs its sessions
    # (unset: a random key kept in the data directory, shared by the processes on this host).
    console_bind: str = "0.0.0.0:8001"
    console_workers: int = 2
    console_threads: int = 8
    console_url: str = "http://localhost:8001"
    console_secret_key: str | None = field(default=None, repr=False)
    # Prometheus (zapreply.metrics): the port each receiver (its gunicorn master, for all its
    # processes) and each worker process serves /metrics on, 0 for none; the address they
    # listen on; the directory the receiver's processes share their figures in (emptied at its
    # start; unset: one under the data directory); the bearer token of the console's /metrics
    # (unset: it answers 404).
    receiver_metrics_port: int = 0
    worker_metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    metrics_dir: Path | None = None
    metrics_token: str | None = field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def longest_countdown_seconds(self) -> float:
        """The longest a task may be scheduled ahead: Redis hands a countdown task out again
        once the visibility timeout passes, so a longer wait is made of shorter hops, each
        finding the durable wait (debounce, backoff) not over yet and scheduling the next."""
        return self.visibility_timeout_seconds / 2


# worker/inbound.py backs database retries off to 8 s: half of this.
MIN_VISIBILITY_TIMEOUT_SECONDS = 16


def load(overrides: dict[str, str] | None = None) -> Settings:
    """Read the environment; `overrides` (e.g. the app factory's config) take precedence."""
    env = {**os.environ, **(overrides or {})}
    data_dir = Path(_str(env, "ZAPREPLY_DATA_DIR", "var")).resolve()
    database_url = _str(env, "DATABASE_URL", f"sqlite:///{data_dir / 'zapreply.storage.db'}")
    broker_url = _str(env, "CELERY_BROKER_URL", f"sqla+sqlite:///{data_dir / 'broker.db'}")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        hmac_key=_str(env, "WUZAPI_HMAC_KEY"),
        admin_token=_str(env, "ADMIN_TOKEN"),
        webhook_allow_unsigned=_bool(env, "WEBHOOK_ALLOW_UNSIGNED", False),
        public_url=_str(env, "PUBLIC_URL", "http://localhost:8000").rstrip("/"),
        max_body_bytes=_int(env, "WEBHOOK_MAX_BODY_BYTES", 24 * 1024 * 1024),
        config_cache_seconds=_float(env, "CONFIG_CACHE_SECONDS", 5.0),
        worker_pool=_str(env, "WORKER_POOL", "threads"),
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 32),
        worker_nice=_int(env, "WORKER_NICE", 10),
        llm_timeout_seconds=_float(env, "LLM_TIMEOUT_SECONDS", 30.0),
        llm_max_attempts=_int(env, "LLM_MAX_ATTEMPTS", 5),
        send_timeout_seconds=_float(env, "SEND_TIMEOUT_SECONDS", 15.0),
        send_max_attempts=_int(env, "SEND_MAX_ATTEMPTS", 5),
        retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 2.0),
        retry_max_seconds=_float(env, "RETRY_MAX_SECONDS", 120.0),
        max_tool_rounds=_int(env, "MAX_TOOL_ROUNDS", 5),
        history_limit=_int(env, "HISTORY_LIMIT", 30),
        lease_seconds=_float(env, "LEASE_SECONDS", 15.0),
        sweep_interval_seconds=_float(env, "SWEEP_INTERVAL_SECONDS", 5.0),
        sweep_grace_seconds=_float(env, "SWEEP_GRACE_SECONDS", 15.0),
        visibility_timeout_seconds=_int(env, "VISIBILITY_TIMEOUT_SECONDS", 30),
        task_time_limit_seconds=_int(env, "TASK_TIME_LIMIT_SECONDS", 300),
        log_level=_str(env, "LOG_LEVEL", "INFO"),
        media_inline_max_bytes=_int(env, "MEDIA_INLINE_MAX_BYTES", 2 * 1024 * 1024),
        media_max_bytes=_int(env, "MEDIA_MAX_BYTES", 25 * 1024 * 1024),
        media_timeout_seconds=_float(env, "MEDIA_TIMEOUT_SECONDS", 60.0),
        max_messages_per_run=_int(env, "MAX_MESSAGES_PER_RUN", 10),
        queue_degraded_depth=_int(env, "QUEUE_DEGRADED_DEPTH", 1000),
        retention_interval_seconds=_float(env, "RETENTION_INTERVAL_SECONDS", 3600.0),
        retention_batch_size=_int(env, "RETENTION_BATCH_SIZE", 500),
        knowledge_refresh_interval_seconds=_float(env, "KNOWLEDGE_REFRESH_INTERVAL_SECONDS",
                                                  60.0),
        # WhatsApp's media CDN and S3's virtual-hosted and path-style hosts.
        media_allowed_hosts=_allowed_hosts(env, "MEDIA_ALLOWED_HOSTS",
                                           "*.whatsapp.net,*.amazonaws.com"),
        webhook_read_timeout_seconds=_float(env, "WEBHOOK_READ_TIMEOUT_SECONDS", 15.0),
        receiver_bind=_str(env, "GUNICORN_BIND", f"0.0.0.0:{_int(env, 'PORT', 8000)}"),
        receiver_workers=_int(env, "WEB_CONCURRENCY", 2),
        receiver_threads=_int(env, "RECEIVER_THREADS", 8),
        publish_fast_path=_choice(env, "PUBLISH_FAST_PATH", ("redis", "off"), "redis"),
        console_bind=_str(env, "CONSOLE_BIND", "0.0.0.0:8001"),
        console_workers=_int(env, "CONSOLE_WORKERS", 2),
        console_threads=_int(env, "CONSOLE_THREADS", 8),
        console_url=_str(env, "CONSOLE_URL", "http://localhost:8001").rstrip("/"),
        console_secret_key=_str(env, "CONSOLE_SECRET_KEY"),
        receiver_metrics_port=_int(env, "RECEIVER_METRICS_PORT", 0),
        worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 0),
        metrics_address=_str(env, "METRICS_ADDRESS", "127.0.0.1"),
        metrics_dir=Path(raw_dir).resolve() if (raw_dir := _str(
            env, "PROMETHEUS_MULTIPROC_DIR")) else None,
        metrics_token=_str(env, "METRICS_TOKEN"),
    )
    if settings.visibility_timeout_seconds < MIN_VISIBILITY_TIMEOUT_SECONDS:
        # Below it, the database-retry backoff (worker/inbound.py) could outlast half of it,
        # and a countdown longer than the visibility timeout comes back early on Redis.
        raise ImproperlyConfigured(
            f"VISIBILITY_TIMEOUT_SECONDS must be at least {MIN_VISIBILITY_TIMEOUT_SECONDS}")
    if settings.max_messages_per_run < 1:
        raise ImproperlyConfigured("MAX_MESSAGES_PER_RUN must be at least 1")
    if settings.queue_degraded_depth < 1:
        raise ImproperlyConfigured("QUEUE_DEGRADED_DEPTH must be at least 1")
    if settings.retention_interval_seconds <= 0 or settings.retention_batch_size < 1:
        raise ImproperlyConfigured(
            "RETENTION_INTERVAL_SECONDS must be above 0 and RETENTION_BATCH_SIZE at least 1")
    if settings.knowledge_refresh_interval_seconds <= 0:
        raise ImproperlyConfigured("KNOWLEDGE_REFRESH_INTERVAL_SECONDS must be above 0")
    if settings.webhook_read_timeout_seconds <= 0:
        raise ImproperlyConfigured("WEBHOOK_READ_TIMEOUT_SECONDS must be positive")
    if settings.receiver_workers < 1 or settings.receiver_threads < 1:
        raise ImproperlyConfigured("WEB_CONCURRENCY and RECEIVER_THREADS must be at least 1")
    if settings.console_workers < 1 or settings.console_threads < 1:
        raise ImproperlyConfigured("CONSOLE_WORKERS and CONSOLE_THREADS must be at least 1")
    if settings.console_secret_key is not None and len(settings.console_secret_key) < 32:
        raise ImproperlyConfigured("CONSOLE_SECRET_KEY must be at least 32 characters")
    for name, port in (("RECEIVER_METRICS_PORT", settings.receiver_metrics_port),
                       ("WORKER_METRICS_PORT", settings.worker_metrics_port)):
        if not 0 <= port <= 65535:
            raise ImproperlyConfigured(f"{name} must be a port number, or 0 for none")
    if settings.metrics_token is not None and len(settings.metrics_token) < 32:
        raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters")
    if not 0 <= settings.worker_nice <= 19:
        raise ImproperlyConfigured("WORKER_NICE must be between 0 and 19")
    if settings.lease_seconds < 3:
        raise ImproperlyConfigured("LEASE_SECONDS must be at least 3 (it is renewed every third)")
    longest_run = settings.llm_timeout_seconds * (settings.max_tool_rounds + 1)
    if longest_run >= settings.task_time_limit_seconds:
        raise ImproperlyConfigured(
            "TASK_TIME_LIMIT_SECONDS must exceed LLM_TIMEOUT_SECONDS × (MAX_TOOL_ROUNDS + 1)"
        )
    return settings


# The settings of the app whose request, task or command is running (zapreply.runtime binds
# them); with none bound, the process's own, read from the environment on first use.
bound_settings: ContextVar[Settings | None] = ContextVar("zapreply_settings", default=None)
_process_settings: Settings | None = None


def get_settings() -> Settings:
    bound = bound_settings.get()
    if bound is not None:
        return bound
    global _process_settings
    if _process_settings is None:
        _process_settings = load()
    return _process_settings


def override(settings: Settings | None) -> None:
    """Replace the process's own settings, the ones read where no app has bound its own
    (tests; None reads the environment again on next use). App factories never call it."""
    global _process_settings
    _process_settings = settings


def apply_litellm_environment() -> None:
    """Defaults litellm reads from the environment itself; call before importing it.

    Without the local cost map litellm downloads a price list at import and, offline,
    retries for several seconds before falling back to the copy it ships.

    OpenAI and OpenAI-compatible chat calls go through litellm's own HTTP handler instead of
    the OpenAI SDK: the same request, response, error classes and price, for ~40% less CPU
    per call (the SDK re-walks every message and tool schema against its request types).
    That handler sends no OpenAI-Organization/OpenAI-Project headers, so it stays off when
    one is configured; `EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER=false` turns it off.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if not any(os.environ.get(name) for name in _OPENAI_SCOPE_VARIABLES):
        os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "true")


# Where litellm and the OpenAI SDK read an organization or project for the request headers.
_OPENAI_SCOPE_VARIABLES = ("OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")
