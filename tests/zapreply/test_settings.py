"""The defaults zapreply gives litellm through the environment before importing it."""

from __future__ import annotations

import os

import pytest

from zapreply.settings import apply_litellm_environment

HTTP_HANDLER = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
OPENAI_SCOPE = ("OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    # setenv first, so that what the code under test sets is undone after the test.
    for name in (HTTP_HANDLER, "LITELLM_LOCAL_MODEL_COST_MAP", *OPENAI_SCOPE):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_litellm_uses_its_local_price_list_and_its_own_http_handler(clean_environment):
    apply_litellm_environment()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert os.environ[HTTP_HANDLER] == "true"


def test_an_operator_can_keep_the_openai_sdk(clean_environment):
    clean_environment.setenv(HTTP_HANDLER, "false")
    apply_litellm_environment()
    assert os.environ[HTTP_HANDLER] == "false"


@pytest.mark.parametrize("name", OPENAI_SCOPE)
def test_an_openai_organization_or_project_keeps_the_openai_sdk_which_sends_it(
        clean_environment, name):
    clean_environment.setenv(name, "org-or-project")
    apply_litellm_environment()
    assert HTTP_HANDLER not in os.environ
