"""The console in a real browser (headless Chromium, Selenium) against the real receiver,
worker and console processes; the LLM and WuzAPI are the local stand-ins. Each test saves a
screenshot in artifacts/console/."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from tests.conftest import fixture_bytes
from tests.console_app.browser import browser, console_url, full_page_screenshot  # noqa: F401
from tests.console_app.conftest import PASSWORD, add_operator
from tests.e2e import fresh, post, wait_for
from tests.factories import make_config
from zapreply.storage.db import session_scope
from zapreply.storage.models import Conversation, Message, ReplyRun

pytestmark = pytest.mark.usefixtures("worker_process", "idle_afterwards")

# Every visible form control must have a label (or an aria-label).
UNLABELLED = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden' && !el.hidden && el.offsetParent !== null)
  .filter(el => !el.getAttribute('aria-label') &&
                !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)))
  .map(el => el.name || el.id || el.outerHTML.slice(0, 60));
"""


def _sign_in(driver, base: str, username: str) -> None:  # type: ignore[no-untyped-def]
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD, Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda d: d.current_url.rstrip("/") == base)


def _wait(driver, predicate, timeout: float = 45):  # type: ignore[no-untyped-def]
    # A page being replaced (a form posted, a live update) leaves stale elements for a moment.
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
        StaleElementReferenceException, NoSuchElementException)).until(predicate)


def _click(driver, xpath: str) -> None:  # type: ignore[no-untyped-def]
    """Click the element, found again if a live update replaced it meanwhile."""
    def clicked(d) -> bool:  # type: ignore[no-untyped-def]
        d.find_element(By.XPATH, xpath).click()
        return True

    _wait(driver, clicked)


def _text(driver) -> str:  # type: ignore[no-untyped-def]
    return driver.find_element(By.TAG_NAME, "body").text


def _message_arrives(receiver: str, **info) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e import fixture_body

    body = fresh(fixture_body("message_text.raw.json", **info) if info
                 else fixture_bytes("message_text.raw.json"))
    assert post(receiver, body).json()["status"] == "queued"


def _conversation_id() -> int:
    with session_scope() as session:
        return session.scalars(select(Conversation.id)).one()


def test_an_operator_signs_in_and_a_webhook_appears_in_the_open_inbox_without_reload(
        db, browser, console_url, receiver, wuzapi):  # noqa: F811
    add_operator("ana", "admin")
    make_config(wuzapi.url)
    _sign_in(browser, console_url, "ana")
    assert "No conversations" in _text(browser)
    assert browser.execute_script(UNLABELLED) == []
    browser.execute_script("window.stillTheSamePage = true")
    _wait(browser, lambda d: "is-live" in d.find_element(By.TAG_NAME, "body")
          .get_attribute("class"))

    _message_arrives(receiver)

    row = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "li.conv"))[0]
    assert "Cliente Teste Um" in row.text
    _wait(browser, lambda d: "Resposta: Olá!" in _text(d))  # the reply, live too
    for phone, name in (("5511900000002", "Joana Prado"), ("5511900000003", "Rafael Lima")):
        _message_arrives(receiver, Chat=f"{phone}@s.whatsapp.net",
                         Sender=f"{phone}@s.whatsapp.net", PushName=name)
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.conv")) == 3)
    assert browser.execute_script("return window.stillTheSamePage") is True
    _wait(browser, lambda d: _text(d).count("Resposta: Olá!") == 3)
    full_page_screenshot(browser, "inbox")


def test_an_operator_takes_over_writes_as_the_business_and_gives_back(
        db, browser, console_url, receiver, wuzapi):  # noqa: F811
    add_operator("ana", "admin")
    make_config(wuzapi.url)
    _message_arrives(receiver)
    wuzapi.wait_for(lambda sent: len(sent) >= 1)
    _sign_in(browser, console_url, "ana")
    browser.get(f"{console_url}/conversations/{_conversation_id()}")
    _wait(browser, lambda d: "Run #" in _text(d))
    assert browser.execute_script(UNLABELLED) == []

    # Keyboard only: Tab to "Take over" and press Enter.
    body = browser.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(40):
        active = browser.switch_to.active_element
        if active.tag_name == "button" and active.text == "Take over":
            break
        active.send_keys(Keys.TAB)
    else:
        pytest.fail("'Take over' cannot be reached with the keyboard")
    active.send_keys(Keys.ENTER)
    _wait(browser, lambda d: "Paused by a person" in _text(d))

    box = browser.find_element(By.ID, "compose-text")
    box.send_keys("Oi! Aqui é a Ana, da loja. Já te ajudo.")
    _click(browser, "//button[text()='Send as business']")
    sent = wuzapi.wait_for(lambda sent: len(sent) >= 2, timeout=45)
    assert sent[-1]["path"] == "/chat/send/text"
    assert sent[-1]["body"]["Body"] == "Oi! Aqui é a Ana, da loja. Já te ajudo."
    assert sent[-1]["body"]["Phone"] == "5511900000001@s.whatsapp.net"
    _wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, "li.role-business .delivery-sent"))  # live: sending → sent
    with session_scope() as session:
        business = session.scalars(select(Message).where(Message.role == "business")).one()
        assert business.status == "sent" and business.extra["operator"] == "operator:ana"
    full_page_screenshot(browser, "conversation")

    _click(browser, "//button[text()='Give back to the bot']")
    _wait(browser, lambda d: "Bot answering" in _text(d))
    with session_scope() as session:
        assert session.scalars(select(Conversation.status)).one() == "active"


def test_a_failed_run_is_listed_with_its_reason_and_replayed(
        db, browser, console_url, receiver, wuzapi, llm):  # noqa: F811
    add_operator("ana", "agent")
    make_config(wuzapi.url)
    llm.fail_status = 401  # a bad API key: permanent, the run fails at once
    _message_arrives(receiver)
    wait_for(lambda: _run_status() == "failed")
    _sign_in(browser, console_url, "ana")
    browser.find_element(By.LINK_TEXT, "Runs").click()
    assert "AuthenticationError" in _text(browser)
    assert browser.find_element(By.CSS_SELECTOR, "tr.run-failed .status-failed")
    assert browser.execute_script(UNLABELLED) == []
    full_page_screenshot(browser, "runs")

    llm.fail_status = None
    _click(browser, "//button[text()='Replay']")
    _wait(browser, lambda d: "is being replayed" in _text(d))
    wuzapi.wait_for(lambda sent: any(
        s["body"]["Body"] == "Resposta: Olá! Vocês abrem amanhã?" for s in sent))
    wait_for(lambda: _run_status() == "sent")


def _run_status() -> str | None:
    with session_scope() as session:
        return session.scalar(select(ReplyRun.status).order_by(ReplyRun.id.desc()).limit(1))


def test_a_config_edit_with_a_bad_value_shows_the_error_next_to_the_field(
        db, browser, console_url, wuzapi):  # noqa: F811
    add_operator("ana", "admin")
    config_id = make_config(wuzapi.url)
    _sign_in(browser, console_url, "ana")
    browser.find_element(By.LINK_TEXT, "Configs").click()
    assert "/webhooks/wuzapi/loja-teste/" in browser.find_element(
        By.CSS_SELECTOR, "td.webhook input").get_attribute("value")
    assert browser.execute_script(UNLABELLED) == []
    full_page_screenshot(browser, "configs")
    browser.find_element(By.LINK_TEXT, "Loja").click()
    assert "secret-user-token" not in browser.page_source
    field = browser.find_element(By.ID, "opt.temperature")
    field.clear()
    field.send_keys("hot")
    _click(browser, "//button[text()='Save']")
    error = _wait(browser, lambda d: d.find_element(By.ID, "opt.temperature-error"))
    assert "option 'temperature'" in error.text
    assert browser.find_element(By.ID, "opt.temperature").get_attribute("aria-invalid") == "true"
    browser.execute_script("document.getElementById('opt.temperature').scrollIntoView("
                           "{block: 'center'})")
    from tests.console_app.browser import screenshot

    screenshot(browser, "config-error")
    with session_scope() as session:
        from zapreply.storage.models import WorkflowConfig

        assert "temperature" not in session.get(WorkflowConfig, config_id).options


def test_an_agent_cannot_open_configs(db, browser, console_url):  # noqa: F811
    add_operator("beto", "agent")
    _sign_in(browser, console_url, "beto")
    assert browser.find_elements(By.LINK_TEXT, "Configs") == []
    browser.get(f"{console_url}/configs")
    assert "Only an admin may open this page." in _text(browser)
    full_page_screenshot(browser, "agent-configs-refused")


def test_a_form_posted_without_its_csrf_token_is_refused(
        db, browser, console_url, receiver, wuzapi):  # noqa: F811
    add_operator("ana", "admin")
    make_config(wuzapi.url)
    _message_arrives(receiver)
    wait_for(lambda: _run_status() == "sent")
    _sign_in(browser, console_url, "ana")
    browser.get(f"{console_url}/conversations/{_conversation_id()}")
    _wait(browser, lambda d: d.find_element(By.XPATH, "//button[text()='Take over']"))
    # The form as a forged page would post it: without the token, in one step (a live update
    # could otherwise bring the token back between removing it and posting).
    browser.execute_script(
        "const form = [...document.forms].find(f => f.action.endsWith('/take-over'));"
        "form.querySelector('input[name=csrf_token]').remove(); form.submit();")
    _wait(browser, lambda d: "security token" in _text(d))
    full_page_screenshot(browser, "csrf-refused")
    with session_scope() as session:
        assert session.scalars(select(Conversation.status)).one() == "active"


def test_the_sign_in_page(db, browser, console_url):  # noqa: F811
    browser.delete_all_cookies()
    browser.get(f"{console_url}/conversations/1")
    assert "/login" in browser.current_url
    assert browser.execute_script(UNLABELLED) == []
    full_page_screenshot(browser, "login")


def test_the_playground_streams_a_reply_token_by_token(
        db, browser, console_url, llm, wuzapi):  # noqa: F811
    from tests.console_app.conftest import make_conversation

    add_operator("ana", "admin")
    config_id = make_config(wuzapi)
    make_conversation(config_id=config_id, name="Joana Prado", messages=(
        ("customer", "Vocês entregam em Campinas?"),
        ("assistant", "Entregamos sim! O frete para Campinas é R$ 15.")))
    # One word of the answer every 0.2 s: slow enough to watch it arrive.
    llm.stream_delay_seconds = 0.2
    _sign_in(browser, console_url, "ana")
    browser.find_element(By.LINK_TEXT, "Configs").click()
    browser.find_element(By.LINK_TEXT, "Playground").click()
    box = _wait(browser, lambda d: d.find_element(By.ID, "pg-message"))
    assert browser.execute_script(UNLABELLED) == []

    question = "Quais são os horários de vocês amanhã de manhã e à tarde?"
    box.send_keys(question)
    _click(browser, "//button[text()='Send']")

    streaming = ".pg-turn .pg-answer.is-streaming .pg-text"
    first = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, streaming).text)
    second = _wait(browser, lambda d: (lambda text: text if len(text) > len(first) else None)(
        d.find_element(By.CSS_SELECTOR, streaming).text))
    # Two observations of a growing text, both before the answer was complete.
    answer = f"Resposta: {question}"
    assert second.startswith(first) and len(first) < len(second) < len(answer)
    _wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, ".pg-turn .pg-answer:not(.is-streaming)"))
    done = browser.find_element(By.CSS_SELECTOR, ".pg-turn .pg-answer")
    assert answer in done.text and "business tools: dry run" in done.text

    _click(browser, "//button[text()='Replay last customer turn']")
    replay = _wait(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, ".pg-replay .pg-answer:not(.is-streaming)"))
    assert "Resposta: Vocês entregam em Campinas?" in replay.text
    assert "O frete para Campinas é R$ 15." in browser.find_element(
        By.CSS_SELECTOR, ".pg-replay .pg-old").text
    assert wuzapi.requests == []
    full_page_screenshot(browser, "playground")


def test_the_dashboard_draws_a_month_an_admin_and_an_agent_can_read_at_a_glance(
        db, browser, console_url, receiver, wuzapi):  # noqa: F811
    from tests.dashboard_rows import a_month_of_traffic
    from zapreply.storage.models import utcnow

    add_operator("ana", "admin")
    add_operator("beto", "agent")
    config_id = make_config(wuzapi.url, options={"daily_cost_budget": 0.05})
    _message_arrives(receiver)  # one answered through the running system, then the month
    wuzapi.wait_for(lambda sent: len(sent) >= 1)
    wait_for(lambda: _run_status() == "sent")
    a_month_of_traffic(config_id, utcnow())

    _sign_in(browser, console_url, "ana")
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 5
    assert browser.execute_script(UNLABELLED) == []
    full_page_screenshot(browser, "dashboard-hours")
    # Keyboard only: the period and the config, then Show.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "unit")).select_by_value("day")
    Select(browser.find_element(By.ID, "config")).select_by_value(str(config_id))
    browser.find_element(By.ID, "config").send_keys(Keys.TAB)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _wait(browser, lambda d: "The last 30 days, by day" in _text(d))
    assert "budget spent today" in _text(browser).lower()
    assert browser.find_elements(By.CSS_SELECTOR, "svg#cost line.limit")
    assert "daily budget $0.05" in browser.find_element(By.ID, "cost").get_attribute(
        "innerHTML")
    full_page_screenshot(browser, "dashboard")
    # The text alternative of a chart opens like any disclosure.
    table = browser.find_element(By.CSS_SELECTOR, "#h-traffic ~ details")
    table.find_element(By.TAG_NAME, "summary").click()
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 30

    _sign_in(browser, console_url, "beto")
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3
    assert browser.find_elements(By.ID, "cost") == [] and "LLM COST" not in _text(browser)
