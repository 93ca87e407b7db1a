"""The issue's whole path in real headless Chromium, against a local server playing the
merchant's OMS: a signed-in customer asks in the widget where the parcel is and the bot answers
with live tracking; they ask for a person; the agent sees the order and its tracking in the
side panel, opens an after-sales ticket from the conversation, moves it on and hands it to the
warehouse; nobody resolves it in time, so it breaches its (shortened) SLA and escalates to
finance — and the customer reads each step in the widget. Screenshots: console-ticket.png,
widget-ticket.png in test-artifacts/screenshots/."""
from __future__ import annotations

import pytest

from tests.gateway_cluster import Peakdesk
from tests.oms_server import OMS, settings as oms_settings
from tests.test_web import SHOTS, agent, browser, console_login  # noqa: F401  (browser: the fixture)
from tests.test_web_commerce import say, shop_page

pytestmark = pytest.mark.timeout(300)
TICKETS = {"sla": {"urgent": {"resolve_within_s": 3600}, "high": {"resolve_within_s": 12, "remind_before_s": 6},
                   "normal": {"resolve_within_s": 3600}, "low": {"resolve_within_s": 3600}},
           "escalate_to": "finance"}
KB = [{"id": "shipping-time", "question": "多久发货", "alternatives": ["when do you ship"],
       "answer": "付款后48小时内发货。We ship within 48 hours of payment."}]


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    with OMS() as oms:
        p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("webtickets"), "pd-test-webtickets", "wt:", bot_workers=1)
        p.secret = p.post("/api/v1/merchant/customer-secret", {}, p.owner_token)["customer_secret"]
        p.post("/api/v1/kb/import?mode=replace", KB, p.owner_token)
        p.request("PATCH", "/api/v1/merchant", {"settings": {"commerce": oms_settings(oms.url), "tickets": TICKETS}},
                  p.owner_token)
        yield p
        p.stop()


def test_from_where_is_my_parcel_to_an_escalated_ticket_the_customer_follows(pd, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _, username = agent(pd, "after-sales")
    console = console_login(browser, pd, username)
    customer = shop_page(browser, pd, "c1")
    say(customer, "我的快递到哪了？")
    tracking = customer.locator(".m.bot", has_text="杭州萧山转运中心")   # the bot, live from the OMS
    tracking.wait_for(timeout=20000)
    assert "E20261111000123" in tracking.inner_text() and "顺丰" in tracking.inner_text()
    say(customer, "转人工")

    console.locator("#messages .msg", has_text="我的快递到哪了").wait_for(timeout=20000)
    row = console.locator("#pd-orders .pd-order-row[data-order='E20261111000123']")
    row.wait_for(timeout=15000)                                      # the side panel: the order and its parcel
    assert console.locator("#pd-orders .pd-order-row").count() == 1  # c2's trade never shows
    row.locator(".pd-order-head").click()
    row.locator(".pd-events li", has_text="杭州萧山转运中心").first.wait_for()

    console.wait_for_selector("#ticket-form")                        # a ticket from this conversation
    console.fill("#ticket-title", "内胆破损 Cracked inner pot")
    console.select_option("#ticket-department", "after_sales")
    console.select_option("#ticket-priority", "high")
    console.fill("#ticket-order", "E20261111000123")
    console.fill("#ticket-description", "客户收到时内胆有裂纹 the pot arrived cracked")
    console.click("#ticket-create")
    console.locator("#ticket-head", has_text="T000001").wait_for()
    customer.locator(".m.ticket", has_text="您的工单已创建").wait_for(timeout=15000)

    console.click("#ticket-view button.move[data-status='in_progress']")
    console.locator("#ticket-status[data-status='in_progress']").wait_for()
    customer.locator(".m.ticket", has_text="处理中").wait_for(timeout=15000)
    console.fill("#ticket-comment", "仓库核实中 checking with the warehouse")
    console.check("#ticket-internal")
    console.click("#ticket-comment-add")
    note = console.locator("#ticket-comments .msg.internal", has_text="仓库核实中")
    note.wait_for()
    assert "after-sales" in note.inner_text()                     # by the agent's name
    console.select_option("#ticket-move", "warehouse")
    console.click("#ticket-move-go")
    console.locator("#ticket-department-now", has_text="仓储").wait_for()
    customer.locator(".m.ticket", has_text="仓储").wait_for(timeout=15000)

    # nobody resolves it: 12 s after opening it breaches, escalates to finance, the customer is told
    customer.locator(".m.ticket", has_text="加急").wait_for(timeout=30000)
    console.locator("#ticket-view .badge.escalated").wait_for(timeout=15000)
    console.locator("#ticket-department-now", has_text="财务").wait_for()
    assert console.locator("#ticket-priority-now").inner_text() == "紧急"
    console.screenshot(path=str(SHOTS / "console-ticket.png"))
    console.click("#ticket-back")
    console.select_option("#ticket-dept", "finance")                 # finance's queue has it now
    console.locator("#ticket-list .ticket-row", has_text="T000001").wait_for(timeout=10000)
    assert "仓库核实中" not in customer.locator("#pd-msgs, .panel").first.inner_text()   # the note stays inside
    notices = customer.locator(".m.ticket").all_inner_texts()
    assert len(notices) == 4, notices                                # opened, in progress, warehouse, escalated
    customer.screenshot(path=str(SHOTS / "widget-ticket.png"))
    console.context.close()
    customer.context.close()
