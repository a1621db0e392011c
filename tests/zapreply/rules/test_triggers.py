"""Keyword triggers: every operator matches whatever the case and accents, on either side."""

from __future__ import annotations

import logging
import time

import pytest

from zapreply.rules import configs, triggers
from zapreply.rules.options import Options
from zapreply.rules.triggers import matches


@pytest.mark.parametrize(("operator", "keyword", "text", "expected"), [
    ("equals", "Orçamento", "  orcamento ", True),
    ("equals", "orcamento", "ORÇAMENTO", True),
    ("equals", "orçamento", "orçamento já", False),
    ("contains", "pedido", "Meu PEDÍDO atrasou", True),
    ("contains", "pedído", "meu pedido atrasou", True),
    ("starts_with", "Olá", "ola, tudo bem?", True),
    ("starts_with", "ola", "tudo bem? olá", False),
    ("regex", r"^pedido \d+", "Pedído 42", True),
    ("regex", r"^pedído \d+", "pedido 42", True),
    ("regex", r"^PEDIDO\s\d+$", "pedido 42", True),
    ("regex", r"^pedido\S", "pedido 42", False),  # \S keeps its meaning
    ("regex", r"^pedido \d+", "meu pedido 42", False),
])
def test_keywords_match_whatever_the_case_and_accents(operator, keyword, text, expected):
    options = Options(trigger_operator=operator, trigger_keywords=[keyword])
    assert matches(text, options) is expected


def test_a_pattern_that_backtracks_without_end_counts_as_no_match_and_says_why(caplog):
    # `(a|aa)+$` takes exponential time against a run of a's that cannot end the text.
    options = Options(trigger_operator="regex", trigger_keywords=[r"(a|aa)+$", "pedido"])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="zapreply.rules.triggers"):
        assert matches("a" * 40 + "!", options) is False
    assert time.monotonic() - started < triggers.REGEX_SECONDS + 0.5
    assert "gave up" in caplog.text and "(a|aa)+$" in caplog.text


def test_the_textbook_catastrophic_pattern_does_not_hold_a_worker():
    # With Python's `re` this search runs for hours.
    options = Options(trigger_operator="regex", trigger_keywords=[r"(a+)+$"])
    started = time.monotonic()
    assert matches("a" * 40 + "!", options) is False
    assert time.monotonic() - started < triggers.REGEX_SECONDS + 0.5


def test_patterns_are_matched_by_the_engine_that_validated_them():
    # \p{L} is a Unicode class `regex` knows and `re` does not.
    values = configs.validate({
        "name": "Loja", "instance": "loja", "model": "openai/gpt-4o-mini",
        "send": {"driver": "wuzapi", "base_url": "http://wuzapi:8080", "token": "t"},
        "options": {"trigger": "keyword", "trigger_operator": "regex",
                    "trigger_keywords": [r"^\p{L}+ \d+$"]},
    })
    assert matches("pedido 42", Options.of(values["options"])) is True
