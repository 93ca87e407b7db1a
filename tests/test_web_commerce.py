"""Orders, products and tracking in the web pages, in real headless Chromium: the agent's side
panel shows the customer's orders with tracking and the product of the page they came from,
searches a product and sends it, compares two and sends the table; the customer sends the
page's product and one of their own orders from the widget; the merchant's system down shows
"unavailable" while the chat goes on. And the widget's own customer API (`/api/v1/me`): a
customer only ever gets their own orders of their own merchant. Screenshots in
test-artifacts/screenshots/ (console-commerce.png, widget-commerce.png, widget-compare.png)."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.auth import customer_signature
from tests.api_client import Api, run
from tests.gateway_cluster import Peakdesk
from tests.test_web import SHOTS, agent, browser, console_login  # noqa: F401  (browser: the fixture)

pytestmark = pytest.mark.timeout(300)

COOKER_3L = {"product_id": "rc-3l", "title": "智能电饭煲 Rice cooker 3L", "price": "299.00", "category": "厨房电器",
             "url": "https://shop.example/p/rc-3l", "stock": 12,
             "attributes": {"容量 Capacity": "3 L", "功率 Power": "600 W", "内胆 Inner pot": "陶瓷 Ceramic"}}
COOKER_5L = {"product_id": "rc-5l", "title": "智能电饭煲 Rice cooker 5L <img src=x onerror=window.pwned=1>",
             "price": "459.00", "category": "厨房电器", "attributes": {"容量 Capacity": "5 L", "功率 Power": "860 W"}}
KETTLE = {"product_id": "kettle-1", "title": "电水壶 Kettle", "price": "89.00", "category": "厨房电器"}


def productish(p: dict) -> dict:
    """A product as a card carries it (ProductContent)."""
    return {k: p[k] for k in ("product_id", "title", "price", "url", "image_url") if k in p}


def order(order_id: str, customer: str, **extra) -> dict:
    return {"order_id": order_id, "customer_id": customer, "status": "shipped", "total": "299.00",
            "created_at": "2026-11-11T00:05:00+08:00", "items": [{"product_id": "rc-3l", "title": "电饭煲 3L", "qty": 1}],
            "tracking": {"order_id": order_id, "carrier": "顺丰速运 SF Express", "tracking_no": "SF1234567890",
                         "status": "in_transit", "events": [
                             {"at": "2026-11-12T08:00:00+08:00", "text": "运输中 In transit", "location": "杭州"},
                             {"at": "2026-11-11T18:00:00+08:00", "text": "已揽收 Picked up", "location": "宁波"}]},
            **extra}


# -- the widget's customer API, in process ----------------------------------------------------------
async def customer_token(api: Api, tenant, customer: str) -> str:
    ts = int(time.time())
    status, body = await api.call("POST", "/api/v1/auth/customer", json={
        "merchant": tenant.merchant, "customer_id": customer, "ts": ts,
        "signature": customer_signature(tenant.customer_secret, tenant.merchant, customer, ts)})
    assert status == 200, body
    return body["token"]


def test_a_customer_gets_only_their_own_orders_of_their_own_merchant(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await api.tenant("shop-a"), await api.tenant("shop-b")
            await api.call("POST", "/api/v1/commerce/products/import", a.tokens["api"], json=[COOKER_3L, COOKER_5L])
            for tenant, body in ((a, order("TB1001", "c1")), (a, order("TB1002", "c1", status="paid", tracking=None)),
                                 (a, order("TB2001", "c2")), (b, order("JD3001", "c1"))):
                status, _ = await api.call("PUT", f"/api/v1/commerce/orders/{body['order_id']}", tenant.tokens["api"],
                                           json=body)
                assert status == 201
            a_c1, a_c2, b_c1 = (await customer_token(api, a, "c1"), await customer_token(api, a, "c2"),
                                await customer_token(api, b, "c1"))

            _, mine = await api.call("GET", "/api/v1/me/orders", a_c1)
            assert sorted(o["order_id"] for o in mine["items"]) == ["TB1001", "TB1002"]
            shipped = next(o for o in mine["items"] if o["order_id"] == "TB1001")
            assert shipped["tracking"]["events"][0]["text"] == "运输中 In transit"
            _, theirs = await api.call("GET", "/api/v1/me/orders", a_c2)
            assert [o["order_id"] for o in theirs["items"]] == ["TB2001"]
            _, other_shop = await api.call("GET", "/api/v1/me/orders", b_c1)          # same customer id, other merchant
            assert [o["order_id"] for o in other_shop["items"]] == ["JD3001"]
            _, one = await api.call("GET", "/api/v1/me/orders?limit=1", a_c1)
            assert len(one["items"]) == 1

            # the customer is the token's: naming another is refused, never followed
            for query, field in (("customer_id=c2", "customer_id"), ("customer=c2", "customer"),
                                 ("limit=0", "limit"), ("limit=21", "limit"), ("limit=ten", "limit")):
                status, answer = await api.call("GET", f"/api/v1/me/orders?{query}", a_c1)
                assert (status, answer["error"], answer["field"]) == (422, "invalid_field", field), (query, answer)
                assert field in answer["message"]

            visitor = (await api.call("POST", "/api/v1/auth/visitor", json={"merchant": "shop-a"}))[1]["token"]
            status, answer = await api.call("GET", "/api/v1/me/orders", visitor)
            assert status == 403 and "visitor" in answer["message"]
            for role in ("agent", "owner", "api"):                                   # agents read /commerce
                status, answer = await api.call("GET", "/api/v1/me/orders", a.tokens[role])
                assert status == 403 and "/api/v1/commerce" in answer["message"], role
            status, answer = await api.call("GET", "/api/v1/me/orders")
            assert status == 401 and answer["error"] == "missing_token"

            # the entry product: any customer or visitor of the merchant; never another merchant's
            for token in (a_c1, visitor):
                status, product = await api.call("GET", "/api/v1/me/products/rc-3l", token)
                assert status == 200 and product["title"] == COOKER_3L["title"] and product["price"] == "299.00"
            status, answer = await api.call("GET", "/api/v1/me/products/rc-3l", b_c1)
            assert status == 404 and "rc-3l" in answer["message"]
            status, answer = await api.call("GET", "/api/v1/me/products/" + urllib.parse.quote("bad id!", safe=""), a_c1)
            assert (status, answer["field"]) == (422, "product_id")
            status, _ = await api.call("GET", "/api/v1/me/products/rc-3l", a.tokens["agent"])
            assert status == 403

            # the merchant's system down: 503 unavailable, at once, naming why
            dead = f"http://127.0.0.1:{free_port()}/api"
            await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"], json={"settings": {"commerce": {
                "adapter": "http", "http": {"base_url": dead, "timeout_s": 1}}}})
            t0 = time.monotonic()
            status, answer = await api.call("GET", "/api/v1/me/orders", a_c1)
            assert (status, answer["error"]) == (503, "unavailable") and "cannot reach" in answer["message"]
            status, answer = await api.call("GET", "/api/v1/me/products/rc-3l", visitor)
            assert status == 503 and time.monotonic() - t0 < 3

            status, doc = await api.call("GET", "/openapi.json")
            assert {"/api/v1/me/orders", "/api/v1/me/products/{product_id}"} <= set(doc["paths"])
    run(main())


def free_port() -> int:
    from storage.redis_server import free_port as port

    return port()


# -- in the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("webshop"), "pd-test-webshop", "ws:")
    p.api_key = p.post("/api/v1/api-keys", {"name": "OMS"}, p.owner_token)["api_key"]
    p.secret = p.post("/api/v1/merchant/customer-secret", {}, p.owner_token)["customer_secret"]
    for product in (COOKER_3L, COOKER_5L, KETTLE):
        p.request("PUT", f"/api/v1/commerce/products/{product['product_id']}", product, p.api_key)
    yield p
    p.stop()


def shop_page(browser, pd: Peakdesk, customer: str | None = None, product: str | None = None, sockets=None):
    """The demo shop as a logged-in customer (signed like a merchant's server would) on a product
    page. `sockets`: a list that gets the widget's websockets, passed through (to add frames)."""
    args = {"merchant": "demo", **({"product": product} if product else {})}
    if customer:
        ts = int(time.time())
        args.update(customer_id=customer, ts=ts, signature=customer_signature(pd.secret, "demo", customer, ts))
    page = browser.new_context(locale="zh-CN").new_page()
    if sockets is not None:
        page.route_web_socket(re.compile(r"/ws$"), lambda ws: (ws.connect_to_server(), sockets.append(ws)))
    page.goto(f"http://127.0.0.1:{pd.port}/widget-demo?{urllib.parse.urlencode(args)}")
    page.click("#pd-open")
    return page


def say(page, text: str) -> None:
    page.fill("#pd-input", text)
    page.press("#pd-input", "Enter")


def off_shift(*pages) -> None:
    """The next test's conversations go to its own agent."""
    for page in pages:
        page.select_option("#status", "offline")
        page.context.close()


def test_the_agent_sees_orders_tracking_and_the_entry_product_and_the_customer_sends_an_order(pd, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    customer_id = f"u-{uuid.uuid4().hex[:8]}"
    for body in (order("TB20261111001", customer_id),
                 order("TB20261111002", customer_id, status="paid", total="89.00", created_at="2026-11-12T10:00:00+08:00",
                       items=[{"product_id": "kettle-1", "title": "电水壶 Kettle", "qty": 2, "price": "44.50"}], tracking=None),
                 order("TB20261111999", "someone-else")):
        pd.request("PUT", f"/api/v1/commerce/orders/{body['order_id']}", body, pd.api_key)
    _, username = agent(pd, "shop")
    console = console_login(browser, pd, username)
    customer = shop_page(browser, pd, customer_id, product="rc-3l")
    customer.wait_for_selector("#pd-send-product")                       # the page's product, ready to send
    say(customer, "这个电饭煲什么时候到？ when does it arrive?")

    console.locator("#messages .msg", has_text="when does it arrive?").wait_for()
    orders = console.locator("#pd-orders .pd-order-row")
    orders.first.wait_for()
    assert orders.evaluate_all("rows => rows.map(r => r.dataset.order)") == ["TB20261111002", "TB20261111001"]
    shipped = console.locator("#pd-orders .pd-order-row[data-order='TB20261111001']")
    assert "已发货" in shipped.inner_text() and "运输中 In transit" in shipped.inner_text()   # collapsed: the latest event
    shipped.locator(".pd-order-head").click()                            # expanded: carrier, number, events
    shipped.locator(".pd-events li").nth(1).wait_for()
    details = shipped.locator(".pd-details").inner_text()
    assert "顺丰速运 SF Express" in details and "SF1234567890" in details and "已揽收 Picked up · 宁波" in details
    paid = console.locator("#pd-orders .pd-order-row[data-order='TB20261111002']")
    paid.locator(".pd-order-head").click()
    paid.locator(".pd-tracking .pd-none").wait_for()                     # asked for its tracking: none yet
    assert "电水壶 Kettle ×2" in paid.inner_text()
    # the product of the page the customer came from (the conversation's entry)
    console.wait_for_selector("#pd-asked .pd-product[data-product-id='rc-3l']", timeout=15000)
    assert "¥299.00" in console.locator("#pd-asked").inner_text()

    customer.click("#pd-orders")                                          # the customer picks an order of theirs
    customer.wait_for_selector("#pd-order-list .o[data-order='TB20261111001']")
    assert customer.locator("#pd-order-list .o").count() == 2           # never someone else's
    customer.click("#pd-order-list .pd-send-order[data-order='TB20261111001']")
    card = console.locator("#messages .pd-order[data-order-id='TB20261111001']")
    card.wait_for()
    assert "已发货" in card.inner_text() and "电饭煲 3L ×1" in card.inner_text() and "¥299.00" in card.inner_text()
    console.wait_for_selector("#messages .pd-order[data-order-id='TB20261111001'][data-verified='yes']")

    customer.click("#pd-send-product")                                    # and the page's product
    console.wait_for_selector("#messages .pd-product[data-product-id='rc-3l']")
    console.locator("#pd-asked .pd-note", has_text="客户发送的商品").wait_for()
    customer.wait_for_selector(".m.me .pcard.order[data-order-id='TB20261111001']")
    console.screenshot(path=str(SHOTS / "console-commerce.png"))
    customer.screenshot(path=str(SHOTS / "widget-commerce.png"))
    off_shift(console)
    customer.context.close()


def test_the_agent_searches_sends_and_compares_products(pd, browser):
    _, username = agent(pd, "presales")
    console = console_login(browser, pd, username)
    sockets: list = []
    customer = shop_page(browser, pd, sockets=sockets)                    # an anonymous visitor
    say(customer, "有大一点的吗 anything bigger?")
    console.locator("#messages .msg", has_text="anything bigger?").wait_for()
    console.locator("#pd-orders .pd-none", has_text="访客").wait_for()    # a visitor has no orders
    assert customer.locator("#pd-orders").is_hidden()

    console.fill("#pd-search-q", "电饭煲")
    console.press("#pd-search-q", "Enter")
    result = console.locator("#pd-results .pd-result[data-product='rc-5l']")
    result.wait_for()
    assert console.locator("#pd-results .pd-result").count() == 2
    result.locator(".pd-send-product").click()                           # one click: a product card
    card = customer.locator(".pcard.product[data-product-id='rc-5l']")
    card.wait_for()
    assert "<img src=x onerror=window.pwned=1>" in card.inner_text() and "¥459.00" in card.inner_text()
    assert card.locator("img").count() == 0 and customer.evaluate("window.pwned") is None

    console.click("#pd-results .pd-result[data-product='rc-3l'] .pd-pick")
    result.locator(".pd-pick").click()
    table = console.locator("#pd-compare table.pd-compare")
    table.wait_for()
    rows = table.locator("tbody tr").all_inner_texts()
    assert rows[0].split("\t") == ["价格 Price", "299.00 CNY", "459.00 CNY"]
    assert "容量 Capacity\t3 L\t5 L" in rows and "内胆 Inner pot\t陶瓷 Ceramic\t—" in rows
    console.click("#pd-send-compare")
    sent = customer.locator(".m", has_text="商品对比 Comparison").locator("table.cmp")   # drawn as a table
    sent.wait_for()
    assert "容量 Capacity\t3 L\t5 L" in sent.locator("tbody tr").all_inner_texts()
    assert "Rice cooker 3L" in sent.locator("thead").inner_text()
    # the bot's comparison message (docs/bot.md): the table itself and its two product cards
    bot_message = {"kind": "text", "from": {"kind": "bot", "id": "bot"}, "content": {
        "text": "为您对比这两款商品：", "cards": [{"type": "product", **productish(COOKER_3L)}, {"type": "product", **productish(KETTLE)}],
        "comparison": {"products": [productish(COOKER_3L), productish(KETTLE)],
                       "rows": [{"name": "价格 Price", "a": "299.00 CNY", "b": "89.00 CNY"}, {"name": "<b>x</b>", "a": "1", "b": "—"}]}}}
    drawn = console.evaluate("""m => { const n = PDCommerce.render(m); document.body.append(n);
        return {rows: [...n.querySelectorAll("tbody tr")].map(r => r.innerText), head: n.querySelector("thead").innerText,
                cards: [...n.querySelectorAll(".pd-product")].map(c => c.dataset.productId), bold: n.querySelectorAll("b").length}; }""",
                             bot_message)
    assert drawn["rows"] == ["价格 Price\t299.00 CNY\t89.00 CNY", "<b>x</b>\t1\t—"] and drawn["bold"] == 0
    assert "Rice cooker 3L" in drawn["head"] and drawn["cards"] == ["rc-3l", "kettle-1"]
    sockets[-1].send(json.dumps({"t": "msg", "session": "s", "seq": 10 ** 6, "ts": 0, **bot_message}))  # and the widget
    table = customer.locator(".m.bot table.cmp")
    table.wait_for()
    assert table.locator("tbody tr").all_inner_texts() == drawn["rows"]
    assert customer.locator(".m.bot .pcard.product").evaluate_all("cs => cs.map(c => c.dataset.productId)") == \
        ["rc-3l", "kettle-1"]
    customer.screenshot(path=str(SHOTS / "widget-compare.png"))
    assert console.evaluate("window.pwned") is None
    off_shift(console)
    customer.context.close()


class SlowOMS(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(4)
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_the_merchants_system_down_shows_unavailable_and_the_chat_goes_on(pd, browser):
    oms = ThreadingHTTPServer(("127.0.0.1", 0), SlowOMS)
    oms.daemon_threads = True
    threading.Thread(target=oms.serve_forever, daemon=True).start()
    slow = {"adapter": "http", "http": {"base_url": f"http://127.0.0.1:{oms.server_address[1]}/api", "timeout_s": 1}}
    pd.request("PATCH", "/api/v1/merchant", {"settings": {"commerce": slow}}, pd.owner_token)
    try:
        _, username = agent(pd, "outage")
        console = console_login(browser, pd, username)
        customer = shop_page(browser, pd, f"u-{uuid.uuid4().hex[:8]}", product="rc-3l")
        say(customer, "我的快递呢 where is my parcel?")
        console.locator("#messages .msg", has_text="where is my parcel?").wait_for()
        console.fill("#composer", "我帮您查一下 let me check")                # the chat does not wait for the panel
        console.press("#composer", "Enter")
        customer.wait_for_selector("text=我帮您查一下 let me check")
        down = console.locator("#pd-orders .pd-unavailable")
        down.wait_for(timeout=10000)
        assert "系统暂不可用" in down.inner_text() and "did not answer within 1 s" in down.inner_text()
        assert console.get_attribute("#commerce", "data-state") == "unavailable"
        console.fill("#pd-search-q", "电饭煲")
        console.press("#pd-search-q", "Enter")
        console.locator("#pd-results .pd-unavailable").wait_for(timeout=10000)
        say(customer, "好的 thanks")                                       # and on it goes, both ways
        console.locator("#messages .msg", has_text="好的 thanks").wait_for()
        customer.click("#pd-orders")
        customer.wait_for_selector("#pd-order-list [data-state='unavailable']", timeout=10000)
        assert customer.locator("#pd-send-product").is_hidden()             # its product could not be read
        off_shift(console)
        customer.context.close()
    finally:
        pd.request("PATCH", "/api/v1/merchant", {"settings": {"commerce": {"adapter": "builtin"}}}, pd.owner_token)
        oms.shutdown()


def test_the_demo_page_and_the_entry_endpoint_refuse_bad_input(pd):
    def get(path, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{pd.port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, page = get("/widget-demo?merchant=demo&product=rc-3l&customer_id=%3Cb%3E&ts=1795396703&signature=ab12")
    assert status == 200 and 'data-product="rc-3l"' in page and 'data-customer-id="&lt;b&gt;"' in page
    for query, field in (("product=%22%3E%3Cscript%3E", "product"), ("customer_id=c1&ts=1795396703", "signature"),
                         ("customer_id=c1&ts=soon&signature=ab", "ts")):
        status, body = get(f"/widget-demo?merchant=demo&{query}")
        assert status == 422 and json.loads(body)["field"] == field, query
    assert get("/api/v1/conversations/NOT-A-SESSION/entry", pd.owner_token)[0] == 422
    assert get("/api/v1/conversations/abc123/entry", pd.owner_token)[0] == 404
    assert get("/api/v1/conversations/abc123/entry")[0] == 401
    status, body = get("/web/commerce.js")
    assert status == 200 and "PDCommerce" in body
