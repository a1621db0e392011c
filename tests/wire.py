"""WuzAPI's bodies as it would post them now: the fixtures were captured in March 2026, and
a message WhatsApp timestamped that long ago is a backlog (`max_message_age_minutes`), not
answered. Shared by the tests and the bench (no test dependencies here)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_TIMESTAMP_JSON = re.compile(rb'("Timestamp": ?")[^"]*(")')
_TIMESTAMP_FORM = re.compile(rb"(%22Timestamp%22%3A%22).*?(%22)")


def stamped_now(body: bytes, at: datetime | None = None) -> bytes:
    """`body` (JSON or form-encoded) with its message's Info.Timestamp set to `at` (now), in
    RFC 3339 as WuzAPI writes it."""
    when = (at or datetime.now(UTC)).isoformat(timespec="seconds").encode()
    body = _TIMESTAMP_JSON.sub(lambda m: m.group(1) + when + m.group(2), body)
    encoded = when.replace(b":", b"%3A").replace(b"+", b"%2B")
    return _TIMESTAMP_FORM.sub(lambda m: m.group(1) + encoded + m.group(2), body)
