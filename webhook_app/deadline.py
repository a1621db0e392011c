"""A total deadline on reading a request body, enforced on a thread blocked in recv().

A socket timeout bounds each recv(), not the body: a client sending a byte just inside it holds
the reading thread for as long as it likes, and gunicorn's body reader loops over recv() until it
has what was asked for. So one thread per process watches the reads in progress and, when one
passes its deadline, shuts the read side of that request's socket down. The blocked recv()
returns at once as if the client had finished, the reader sees a short body, and the write side
is still open for the 408.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

# How late past its deadline a read may be cut: the watcher sleeps this long between looks
# while reads are in progress, and not at all while none are.
GRANULARITY_SECONDS = 0.1


class Watch:
    __slots__ = ("deadline", "sock", "cut")

    def __init__(self, deadline: float, sock: Any) -> None:
        self.deadline = deadline
        self.sock = sock
        self.cut = False


class Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = threading.Condition(self._lock)
        self._watches: dict[int, Watch] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, sock: Any, seconds: float) -> Watch:
        """Start the clock on reading from `sock`; `release` it when the body is read."""
        watch = Watch(time.monotonic() + seconds, sock)
        with self._lock:
            if self._pid != os.getpid():
                # A forked gunicorn worker inherits the object but not the thread.
                self._pid = os.getpid()
                self._watches.clear()
                self._thread = threading.Thread(target=self._run, name="body-deadline",
                                                daemon=True)
                self._thread.start()
            if not self._watches:
                self._active.notify()
            self._watches[id(watch)] = watch
        return watch

    def release(self, watch: Watch) -> bool:
        """Stop the clock; True if the deadline passed first (the socket's read side is shut)."""
        with self._lock:
            self._watches.pop(id(watch), None)
        return watch.cut

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._watches:
                    self._active.wait()
                now = time.monotonic()
                late = [watch for watch in self._watches.values() if watch.deadline <= now]
                for watch in late:
                    del self._watches[id(watch)]
                    watch.cut = True
                    try:
                        # socket.socket's own: an SSLSocket's would also drop its TLS state,
                        # and the 408 would go out unencrypted.
                        socket.socket.shutdown(watch.sock, socket.SHUT_RD)
                    except OSError:
                        pass  # The client already went away.
            time.sleep(GRANULARITY_SECONDS)


watcher = Watcher()
