"""Keyword triggers: every operator matches whatever the case and accents, on either side."""

from __future__ import annotations

import pytest

from zapreply.triggers import matches


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
    options = {"trigger_operator": operator, "trigger_keywords": [keyword]}
    assert matches(text, options) is expected
