"""The measured figures, each next to its SPEC §7 target, as one Markdown table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Goal:
    op: Literal[">=", "<="]
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.limit if self.op == ">=" else value <= self.limit

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        return f"{sign} {self.limit:g}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Row:
    what: str
    value: float
    fmt: str  # e.g. "{:.1f} ms"
    goal: Goal | None = None
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        return "PASS" if self.goal.met(self.value) else "MISS"

    def measured(self) -> str:
        text = "n/a" if math.isnan(self.value) else self.fmt.format(self.value)
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def missed(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == "MISS"]

    def render(self) -> str:
        table = [["what", "measured", "target", "result"]]
        table += [[r.what, r.measured(), str(r.goal or ""), r.verdict] for r in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(4)]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [line(table[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(cells) for cells in table[1:]]
        out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out)
