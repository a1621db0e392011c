"""gunicorn's threaded worker with a deadline on request headers (gunicorn.conf.py uses it).

gthread parks a connection that has sent nothing in its poller, but once the first byte is in,
a thread reads the headers with no time limit: a client sending a byte now and then, within the
header size limits, would hold that thread for days. The same watcher that bounds body reads
(webhook_app.deadline) gives the headers WEBHOOK_READ_TIMEOUT_SECONDS from the moment a thread
takes the connection; past it the connection is closed unanswered.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from webhook_app import deadline
from webhook_app.extension import EXTENSION
from zapreply.settings import get_settings


class ReceiverWorker(ThreadWorker):
    read_timeout: float

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # The app's own settings (webhook_app.extension); another WSGI app's, the process's.
        runtime = getattr(self.wsgi, "extensions", {}).get(EXTENSION)
        settings = runtime.settings if runtime is not None else get_settings()
        self.read_timeout = settings.webhook_read_timeout_seconds

    def handle(self, conn: Any) -> Any:
        watch = deadline.watcher.watch(conn.sock, self.read_timeout)
        conn.header_watch = watch
        try:
            return super().handle(conn)
        finally:
            deadline.watcher.release(watch)

    def handle_request(self, req: Any, conn: Any) -> Any:
        # The headers are in: from here the body has a deadline of its own (webhooks._body).
        deadline.watcher.release(conn.header_watch)
        return super().handle_request(req, conn)
