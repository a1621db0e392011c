"""Comparing what people type: keywords match whatever the case, accents and spacing."""

from __future__ import annotations

import unicodedata


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def is_keyword(text: str, keyword: str | None) -> bool:
    return bool(keyword) and normalize(text) == normalize(keyword or "")
