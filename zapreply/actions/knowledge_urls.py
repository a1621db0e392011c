"""Knowledge documents read from a URL, fetched by every worker's refresher thread.

Every KNOWLEDGE_REFRESH_INTERVAL_SECONDS a worker looks for documents whose `next_fetch_at` has
come (a few at a time, oldest first) and claims each with a conditional UPDATE: `next_fetch_at`
moved LEASE ahead, only if it is still due. Of two workers that saw the same document due, one
UPDATE changes the row and the other changes nothing, so a document is fetched once; a worker
that dies mid-fetch leaves it due again when the lease ends.

The fetch happens outside any transaction, through the egress transport (zapreply.net.egress):
https only; only public addresses, unless the origin is listed with `https://` in
MEDIA_ALLOWED_HOSTS (the same rule as media; checked on the address connected to, so DNS
cannot answer differently later); a redirect followed only within the same origin, at most
MAX_REDIRECTS times; the whole fetch within FETCH_TIMEOUT_SECONDS; no more than the upload
cap (documents.MAX_UPLOAD_BYTES) read. The answer is read by its Content-Type (else the URL's
extension) with the upload's readers, and the document re-indexed in one transaction, the same
way as an upload; when its text has not changed (content_sha256), nothing is re-indexed.

A failure keeps the text the document had (still searchable), records why in `fetch_error`
(a short reason; never the URL, which may carry a token) and tries again within RETRY_AFTER.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from urllib.parse import urljoin, urlsplit

import httpx

from zapreply.actions import documents
from zapreply.actions.errors import Invalid
from zapreply.actions.knowledge import write_text
from zapreply.net import egress
from zapreply.net.http import shared_client
from zapreply.rules.configs import options_of
from zapreply.settings import Settings, get_settings
from zapreply.storage import events
from zapreply.storage import knowledge as store
from zapreply.storage.db import session_scope
from zapreply.storage.events import EventType
from zapreply.storage.models import KnowledgeDocument, WorkflowConfig, utcnow

log = logging.getLogger(__name__)

# Documents one pass claims at most: the next pass (or another worker) takes the rest.
BATCH = 5
# Longer than a fetch can take: a claimed document is not due again before its fetch ended.
LEASE = timedelta(minutes=10)
FETCH_TIMEOUT_SECONDS = 30.0
MAX_REDIRECTS = 3
# A failed fetch is tried again after at most this long (sooner if it is refreshed sooner).
RETRY_AFTER = timedelta(hours=1)
MAX_REASON_CHARS = 300
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchFailed(Exception):
    """Why a URL could not be read, in words an admin can act on."""


@dataclass(frozen=True)
class Claimed:
    id: int
    url: str
    title: str


def refresh_due(settings: Settings | None = None, limit: int = BATCH) -> list[int]:
    """Fetch the documents due now that this caller claims; their ids."""
    settings = settings or get_settings()
    done = []
    with session_scope() as session:
        candidates = store.due_for_fetch(session, utcnow(), limit)
    for document_id in candidates:
        claimed = _claim(document_id)
        if claimed is not None:
            refresh(claimed, settings)
            done.append(document_id)
    return done


def _claim(document_id: int) -> Claimed | None:
    with session_scope() as session:
        if not store.claim_fetch(session, document_id, utcnow(), LEASE):
            return None
        row = session.get(KnowledgeDocument, document_id)
        if row is None or row.source_url is None:
            return None
        return Claimed(row.id, row.source_url, row.title)


def refresh(claimed: Claimed, settings: Settings) -> None:
    """Fetch a claimed document and record what came of it."""
    try:
        data, content_type = fetch(claimed.url, settings)
        document = read(claimed, data, content_type)
    except FetchFailed as exc:
        _failed(claimed, str(exc))
        return
    except Invalid as exc:
        _failed(claimed, f"unreadable: {exc}")
        return
    with session_scope() as session:
        row = session.get(KnowledgeDocument, claimed.id)
        if row is None or row.source_url != claimed.url:
            return  # deleted, or replaced, while it was fetched
        config = session.get(WorkflowConfig, row.workflow_config_id)
        changed = documents.digest(document.text) != row.content_sha256
        if changed:
            language = (options_of(config).knowledge_language if config else None) or "portuguese"
            write_text(session, row, document, language)
        passages = documents.split_passages(document.text)
        now = utcnow()
        row.fetched_at, row.fetch_error = now, None
        row.next_fetch_at = now + timedelta(hours=row.refresh_hours) \
            if row.refresh_hours else None
        events.record(session, EventType.KNOWLEDGE_FETCHED, document_id=row.id,
                      workflow_config_id=row.workflow_config_id, chars=len(document.text),
                      passages=len(passages), changed=changed)


def _failed(claimed: Claimed, reason: str) -> None:
    reason = reason[:MAX_REASON_CHARS]
    with session_scope() as session:
        row = session.get(KnowledgeDocument, claimed.id)
        if row is None or row.source_url != claimed.url:
            return
        now = utcnow()
        row.fetch_error = reason
        if row.refresh_hours:
            row.next_fetch_at = now + min(timedelta(hours=row.refresh_hours), RETRY_AFTER)
        else:
            # Fetched once: tried again until a first fetch succeeds, then only on request.
            row.next_fetch_at = now + RETRY_AFTER if row.fetched_at is None else None
        events.record(session, EventType.KNOWLEDGE_FETCH_FAILED, document_id=row.id,
                      workflow_config_id=row.workflow_config_id, reason=reason)
    log.info("knowledge document %s not fetched: %s", claimed.id, reason)


def read(claimed: Claimed, data: bytes, content_type: str | None) -> documents.Document:
    """The document's text, by the answer's Content-Type, else by the URL's extension."""
    name = PurePosixPath(urlsplit(claimed.url).path).name or None
    try:
        documents.kind_of(None, content_type)
        filename, mimetype = None, content_type
    except Invalid:
        filename, mimetype = name, None
        if PurePosixPath(name or "").suffix == "":
            raise Invalid(f"unsupported Content-Type {content_type or 'none'!r}: the URL must "
                          "serve HTML, text, Markdown, PDF or CSV") from None
    parsed = documents.from_upload(data, filename=filename, mimetype=mimetype,
                                   title=claimed.title)
    # A URL's document has no file name: its last path segment only chose the reader.
    return documents.Document(parsed.title, parsed.kind, parsed.text)


def fetch(url: str, settings: Settings) -> tuple[bytes, str | None]:
    """The body at `url` and its Content-Type, under the rules above; FetchFailed if not."""
    until = time.monotonic() + FETCH_TIMEOUT_SECONDS
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            with egress.deadline(until), _http(settings).stream(
                "GET", current, timeout=egress.timeout_until(until),
                headers={"Accept": "text/html, text/plain, text/markdown, text/csv, "
                                   "application/pdf;q=0.9, */*;q=0.1"},
            ) as response:
                if response.status_code in _REDIRECTS:
                    current = _same_origin(current, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise FetchFailed(f"the server answered {response.status_code}")
                return _read_capped(response), response.headers.get("content-type")
        except egress.AddressRefused:
            raise FetchFailed("the host resolves only to private or local addresses (allowed "
                              "only for an https origin listed in MEDIA_ALLOWED_HOSTS)") from None
        except httpx.TimeoutException:
            raise FetchFailed(f"no complete answer within {FETCH_TIMEOUT_SECONDS:g} s") from None
        except httpx.HTTPError as exc:
            detail = " ".join(str(exc).split())[:150]
            raise FetchFailed(f"{type(exc).__name__}: {detail}" if detail
                              else type(exc).__name__) from None
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")


def _same_origin(current: str, location: str) -> str:
    if not location:
        raise FetchFailed("redirected without a Location")
    target = urljoin(current, location)
    before, after = urlsplit(current), urlsplit(target)
    if (after.scheme, after.hostname, after.port) != (before.scheme, before.hostname,
                                                       before.port):
        raise FetchFailed("redirected to another host or scheme (not followed: add the URL "
                          "it points to instead)")
    return target


def _read_capped(response: httpx.Response) -> bytes:
    cap = documents.MAX_UPLOAD_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise FetchFailed(f"the document is over {cap} bytes")
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > cap:
            raise FetchFailed(f"the document is over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _http(settings: Settings) -> httpx.Client:
    # Origins listed with https:// in MEDIA_ALLOWED_HOSTS may be private; a client per list,
    # so a pooled connection is never reused under another list's rules.
    private = frozenset((e.host, e.port) for e in settings.media_allowed_hosts
                        if e.scheme == "https")
    key = ",".join(sorted(f"{host}:{port}" for host, port in private))
    return shared_client(f"knowledge:{key}", lambda: egress.client(
        lambda host, port: (host, port) in private,
        httpx.Limits(max_connections=4, max_keepalive_connections=2)))


def start() -> threading.Thread:
    """Run `refresh_due` every KNOWLEDGE_REFRESH_INTERVAL_SECONDS from a background thread."""
    def loop() -> None:
        interval = get_settings().knowledge_refresh_interval_seconds
        stop = threading.Event()
        # Workers started together do not all look at the same moment.
        while not stop.wait(interval * random.uniform(0.5, 1.0)):
            try:
                while len(refresh_due()) == BATCH:
                    pass  # more may be due: the next batch at once
            except Exception:  # noqa: BLE001 - database down: try next time
                log.warning("knowledge refresh failed", exc_info=True)

    # In the caller's context: the runtime it has bound (worker.app) is the loop's.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,),
                              name="knowledge-refresh", daemon=True)
    thread.start()
    return thread
