"""The bot in real headless Chromium: the widget opens with the bot's welcome, the bot answers
a question, "转人工" brings an agent whose console shows what the bot said and suggests
knowledge-base answers, one click sends one to the customer. Screenshots in
test-artifacts/screenshots/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gateway_cluster import Peakdesk
from tests.test_web import SHOTS, agent, browser, console_login  # noqa: F401  (browser: the fixture)

pytestmark = pytest.mark.timeout(300)
KB = json.loads((Path(__file__).parent / "data" / "bot" / "kb.json").read_text())


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("webbot"), "pd-test-webbot", "wb:", bot_workers=1)
    p.post("/api/v1/kb/import", KB, p.owner_token)
    yield p
    p.stop()


def answer_of(entry_id: str) -> str:
    return next(e["answer"] for e in KB if e["id"] == entry_id)


def test_the_bot_answers_in_the_widget_and_assists_the_agent_after_the_handover(pd, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _, username = agent(pd, "xiaobai")
    console = console_login(browser, pd, username)
    customer = browser.new_context(locale="zh-CN").new_page()
    customer.goto(f"http://127.0.0.1:{pd.port}/widget-demo?merchant=demo")
    customer.click("#pd-open")
    customer.locator(".m.bot", has_text="转人工").wait_for(timeout=15000)  # the welcome, before anyone typed

    customer.fill("#pd-input", "退款一般几天能到账啊")
    customer.press("#pd-input", "Enter")
    first_line = answer_of("refund-time").splitlines()[0][:20]
    customer.locator(".m.bot", has_text=first_line).wait_for(timeout=15000)
    customer.screenshot(path=str(SHOTS / "widget-bot-answer.png"))

    customer.fill("#pd-input", "转人工")
    customer.press("#pd-input", "Enter")
    console.wait_for_selector(".conv[data-session]", timeout=15000)
    console.locator("#messages .msg.bot", has_text=first_line).wait_for(timeout=15000)  # the agent sees the bot's part

    customer.fill("#pd-input", "我要开发票 怎么申请")
    customer.press("#pd-input", "Enter")
    suggestion = console.locator("#suggestions .suggestion").first
    suggestion.wait_for(timeout=15000)
    assert suggestion.get_attribute("data-entry") in ("invoice-request", "company-invoice")
    chosen = answer_of(suggestion.get_attribute("data-entry"))
    console.screenshot(path=str(SHOTS / "console-bot-suggestions.png"))
    suggestion.locator("button.use").click()
    customer.locator(".m:not(.me):not(.bot)", has_text=chosen.splitlines()[0][:20]).wait_for(timeout=15000)
    assert console.locator("#suggestions").is_hidden()
