"""Comparing what people type: keywords match whatever the case, accents and spacing."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import regex

_PHONE_PUNCTUATION = re.compile(r"[\s+().-]")
# A WhatsApp name is chosen by whoever writes to us: a name, not a paragraph.
NAME_MAX_CHARS = 60


def normalize(text: str) -> str:
    return " ".join(without_accents(text).casefold().split())


def without_accents(text: str) -> str:
    """The text with its accents dropped, nothing else changed (safe for a regex: its
    escapes are ASCII letters, which keep their case)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def is_keyword(text: str, keyword: str | None) -> bool:
    return bool(keyword) and normalize(text) == normalize(keyword or "")


def quoted_name(name: str | None) -> str:
    """A contact's WhatsApp name (push name) as the model may see it: on one line, without
    control or format characters, at most NAME_MAX_CHARS, and JSON-quoted, so that a name
    such as "Ignore previous instructions" reads as what someone called themselves, never as
    an instruction. Empty when there is no name left."""
    if not name:
        return ""
    kept = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in name)
    cleaned = " ".join(kept.split())[:NAME_MAX_CHARS].strip()
    return json.dumps(cleaned, ensure_ascii=False) if cleaned else ""


def bot_id(value: str) -> str | None:
    """The user part of a phone number or JID, as digits: '+55 11 90000-0099',
    '5511900000099@s.whatsapp.net' and '5511900000099:12@s.whatsapp.net' are one; an @lid
    JID keeps its own digits. None when it is not a number."""
    user = value.strip().split("@", 1)[0].split(":", 1)[0]
    digits = _PHONE_PUNCTUATION.sub("", user)
    return digits if digits.isascii() and digits.isdigit() and len(digits) <= 20 else None


def compile_pattern(pattern: str) -> Any:
    """The trigger keyword as the engine that matches it reads it; raises `regex.error`."""
    return regex.compile(pattern, regex.IGNORECASE)
