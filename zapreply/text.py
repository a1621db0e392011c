"""Comparing what people type: keywords match whatever the case, accents and spacing."""

from __future__ import annotations

import unicodedata


def normalize(text: str) -> str:
    return " ".join(without_accents(text).casefold().split())


def without_accents(text: str) -> str:
    """The text with its accents dropped, nothing else changed (safe for a regex: its
    escapes are ASCII letters, which keep their case)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def is_keyword(text: str, keyword: str | None) -> bool:
    return bool(keyword) and normalize(text) == normalize(keyword or "")
