"""Keyset paging over a table's integer id: the id is the cursor, so a page never shifts when
rows are added. Newest first by default (`before_id` for the page before); with `after_id`,
oldest first from there (for tailing a log or reading forward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from zapreply.actions.errors import Invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    has_more: bool
    # Exactly one of the two is part of the answer: next_after_id when reading forward.
    forward: bool
    next_id: int | None

    def cursor(self) -> dict[str, Any]:
        """`has_more` and the next cursor, as the admin API answers them."""
        key = "next_after_id" if self.forward else "next_before_id"
        return {"has_more": self.has_more, key: self.next_id}


def page(
    session: Session,
    statement: Select[Any],
    id_column: InstrumentedAttribute[int],
    *,
    limit: int = DEFAULT_LIMIT,
    before_id: int | None = None,
    after_id: int | None = None,
) -> Page:
    """One page of `statement`'s rows; both cursors may be given (forward, below before_id)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    if before_id is not None:
        statement = statement.where(id_column < before_id)
    if after_id is not None:
        statement = statement.where(id_column > after_id).order_by(id_column)
    else:
        statement = statement.order_by(id_column.desc())
    # One row more than asked says whether there is a next page without counting.
    rows = list(session.scalars(statement.limit(limit + 1)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if after_id is not None:
        return Page(rows, has_more, forward=True, next_id=rows[-1].id if rows else after_id)
    return Page(rows, has_more, forward=False, next_id=rows[-1].id if has_more else None)
