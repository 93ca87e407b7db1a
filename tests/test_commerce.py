"""Products, orders and tracking (storage/commerce) over REST with real Redis: the built-in store
the merchant's systems fill, and the generic HTTP adapter against a local server playing a
merchant's OMS with realistic nested payloads — mapped, cached, and "unavailable" within its
timeout when the OMS is slow, down or wrong. Orders never cross customers or merchants."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from urllib.parse import quote
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storage.commerce import CommerceUnavailable
from storage.commerce.http import HttpAdapter
from storage.redis_server import free_port
from tests.api_client import Api, run

COOKER_3L = {"product_id": "rc-3l", "title": "智能电饭煲 Rice cooker 3L", "price": "299.00", "category": "厨房电器",
             "attributes": {"容量 Capacity": "3 L", "功率 Power": "600 W", "内胆 Inner pot": "陶瓷 Ceramic"}}
COOKER_5L = {"product_id": "rc-5l", "title": "智能电饭煲 Rice cooker 5L", "price": "459.00", "category": "厨房电器",
             "attributes": {"容量 Capacity": "5 L", "功率 Power": "860 W", "预约 Timer": "24 h"}}
ORDER_C1 = {"order_id": "TB20261111001", "customer_id": "c1", "status": "shipped", "total": "299.00",
            "created_at": "2026-11-11T00:05:00+08:00", "items": [{"product_id": "rc-3l", "title": "电饭煲 3L", "qty": 1}],
            "tracking": {"order_id": "TB20261111001", "carrier": "顺丰速运 SF Express", "tracking_no": "SF1234567890",
                         "status": "in_transit", "events": [{"at": "2026-11-12T08:00:00+08:00", "text": "运输中 In transit",
                                                             "location": "杭州"}]}}
ORDER_C2 = {**ORDER_C1, "order_id": "TB20261111002", "customer_id": "c2", "tracking": None}


def test_the_builtin_store_serves_search_comparison_orders_and_tracking(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            status, out = await api.call("POST", "/api/v1/commerce/products/import", a.tokens["api"],
                                         json=[COOKER_3L, COOKER_5L])
            assert (status, out) == (200, {"imported": 2})
            for q in ("电饭煲", "rice cooker", "厨房"):
                _, found = await api.call("GET", f"/api/v1/commerce/products?q={quote(q)}", a.tokens["agent"])
                assert sorted(p["product_id"] for p in found["items"]) == ["rc-3l", "rc-5l"], q
            _, found = await api.call("GET", "/api/v1/commerce/products?q=5L", a.tokens["agent"])
            assert [p["product_id"] for p in found["items"]] == ["rc-5l"]
            _, table = await api.call("GET", "/api/v1/commerce/compare?a=rc-3l&b=rc-5l", a.tokens["agent"])
            rows = {r[0]: r[1:] for r in table["rows"]}
            assert rows["容量 Capacity"] == ["3 L", "5 L"] and rows["价格 Price"] == ["299.00 CNY", "459.00 CNY"]
            assert rows["预约 Timer"] == ["—", "24 h"] and rows["内胆 Inner pot"] == ["陶瓷 Ceramic", "—"]
            for order in (ORDER_C1, ORDER_C2):
                status, _ = await api.call("PUT", f"/api/v1/commerce/orders/{order['order_id']}", a.tokens["api"], json=order)
                assert status == 201
            _, mine = await api.call("GET", "/api/v1/commerce/customers/c1/orders", a.tokens["agent"])
            assert [o["order_id"] for o in mine["items"]] == ["TB20261111001"]
            _, one = await api.call("GET", "/api/v1/commerce/customers/c1/orders/TB20261111001", a.tokens["agent"])
            assert one["tracking"]["tracking_no"] == "SF1234567890" and one["tracking"]["events"][0]["location"] == "杭州"
            # c2's order asked for as c1's: not found, the same as an order that does not exist
            status, _ = await api.call("GET", "/api/v1/commerce/customers/c1/orders/TB20261111002", a.tokens["agent"])
            assert status == 404
            # an update: the parcel was delivered
            delivered = {**ORDER_C1, "status": "delivered"}
            status, _ = await api.call("PUT", "/api/v1/commerce/orders/TB20261111001", a.tokens["api"], json=delivered)
            assert status == 200
            _, one = await api.call("GET", "/api/v1/commerce/customers/c1/orders/TB20261111001", a.tokens["agent"])
            assert one["status"] == "delivered"
    run(main())


def test_bad_records_roles_and_other_merchants_are_refused(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await api.tenant("shop-a"), await api.tenant("shop-b")
            await api.call("PUT", "/api/v1/commerce/orders/TB20261111001", a.tokens["api"], json=ORDER_C1)
            before = await api.dump("shop-a")
            for body, named in (({**ORDER_C1, "status": "lost"}, "status"), ({**ORDER_C1, "total": "abc"}, "total"),
                                ({**ORDER_C1, "customer_id": "c9"}, "customer_id"),
                                ({**ORDER_C1, "order_id": "other"}, "order_id")):
                status, answer = await api.call("PUT", "/api/v1/commerce/orders/TB20261111001", a.tokens["api"], json=body)
                assert status in (409, 422) and named in json.dumps(answer), (body, answer)
            status, answer = await api.call("POST", "/api/v1/commerce/products/import", a.tokens["api"],
                                            json=[COOKER_3L, {**COOKER_5L, "price": "cheap"}])
            assert status == 422 and answer["message"].startswith("[1].price")
            status, _ = await api.call("PUT", "/api/v1/commerce/orders/TB20261111001", a.tokens["agent"], json=ORDER_C1)
            assert status == 403
            status, answer = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"], json={"settings": {"commerce": {
                "adapter": "http", "http": {"base_url": "http://127.0.0.1:1/api", "timeout_s": 8}}}})
            assert status == 422 and "timeout_s" in answer["field"], answer   # slower than the bot's turn
            assert await api.dump("shop-a") == before
            for role in ("owner", "agent", "api"):
                _, theirs = await api.call("GET", "/api/v1/commerce/customers/c1/orders", b.tokens[role])
                assert theirs["items"] == []
                status, _ = await api.call("GET", "/api/v1/commerce/customers/c1/orders/TB20261111001", b.tokens[role])
                assert status == 404
    run(main())


# -- the HTTP adapter against a merchant's OMS ------------------------------------------------------
OMS_ORDERS = {"code": 0, "data": {"orders": [
    {"order_no": "YZ8801", "buyer": {"id": "c1", "nick": "小明"}, "state": "WAIT_BUYER_CONFIRM_GOODS",
     "pay": {"amount": 459.0}, "created": "2026-11-11 00:01:02",
     "lines": [{"sku": "rc-5l", "name": "电饭煲 5L", "num": 1}],
     "express": {"company": "中通快递 ZTO", "no": "ZT7766", "state": "IN_TRANSIT",
                 "traces": [{"time": "2026-11-12 09:30", "desc": "快件已到达【上海转运中心】", "city": "上海"},
                            {"time": "2026-11-11 18:00", "desc": "已揽收", "city": "宁波"}]}}]}}
MAP = {"orders": "data.orders",
       "order": {"order_id": "order_no", "customer_id": "buyer.id", "status": "state", "total": "pay.amount",
                 "created_at": "created", "items": "lines", "tracking": "express"},
       "item": {"product_id": "sku", "title": "name", "qty": "num"},
       "tracking": {"carrier": "company", "tracking_no": "no", "status": "state", "events": "traces"},
       "tracking_event": {"at": "time", "text": "desc", "location": "city"},
       "statuses": {"WAIT_BUYER_CONFIRM_GOODS": "shipped", "TRADE_SUCCESS": "completed"}}


class FakeOMS(BaseHTTPRequestHandler):
    mode = "ok"
    hits = 0

    def do_GET(self):  # noqa: N802
        FakeOMS.hits += 1
        if FakeOMS.mode == "slow":
            time.sleep(3)
        if FakeOMS.mode == "error":
            self.send_response(502)
            self.end_headers()
            return
        if self.headers.get("Authorization") != "Bearer oms-key":
            self.send_response(401)
            self.end_headers()
            return
        if self.path.startswith("/api/buyers/c1/orders"):
            body = OMS_ORDERS
        elif self.path.startswith("/api/orders/YZ8801"):
            body = OMS_ORDERS["data"]["orders"][0] if FakeOMS.mode != "garbled" else {"order_no": "YZ8801", "buyer": {"id": "c1"}, "state": "??", "pay": {"amount": "free"}}
        elif self.path.startswith("/api/orders/YZ9999"):  # another buyer's order
            body = {**OMS_ORDERS["data"]["orders"][0], "order_no": "YZ9999", "buyer": {"id": "c2"}}
        else:
            self.send_response(404)
            self.end_headers()
            return
        raw = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def oms():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOMS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def config(base: str, **extra) -> dict:
    return {"base_url": base, "headers": {"Authorization": "Bearer oms-key"}, "timeout_s": 0.5, "cache_s": 30,
            "endpoints": {"orders_of": "/buyers/{customer_id}/orders", "order": "/orders/{order_id}"}, "map": MAP, **extra}


def test_the_http_adapter_maps_a_merchants_oms_and_keeps_customers_apart(oms):
    async def main():
        FakeOMS.mode, FakeOMS.hits = "ok", 0
        shop = HttpAdapter(config(oms))
        (order,) = await shop.orders_of("c1")
        assert (order.order_id, order.customer_id, order.status, order.total) == ("YZ8801", "c1", "shipped", "459.00")
        assert order.items[0].product_id == "rc-5l" and order.items[0].qty == 1
        track = await shop.tracking("c1", "YZ8801")
        assert (track.carrier, track.tracking_no) == ("中通快递 ZTO", "ZT7766")
        assert track.events[0].text == "快件已到达【上海转运中心】" and track.events[0].location == "上海"
        hits = FakeOMS.hits
        await shop.order("c1", "YZ8801")
        assert FakeOMS.hits == hits                      # cached: a conversation asks again and again
        assert await shop.order("c1", "YZ9999") is None  # the OMS's order of another buyer: never shown
        assert await shop.order("c1", "NOPE") is None
        await shop.close()
    asyncio.run(main())


@pytest.mark.parametrize("mode, named", [("slow", "did not answer within 0.5 s"), ("error", "HTTP 502"),
                                         ("garbled", "order.status")])
def test_a_slow_down_or_wrong_oms_is_unavailable_within_its_timeout(oms, mode, named):
    async def main():
        FakeOMS.mode = mode
        shop = HttpAdapter(config(oms, cache_s=0))
        t0 = time.monotonic()
        with pytest.raises(CommerceUnavailable, match=named):
            await shop.order("c1", "YZ8801")
        assert time.monotonic() - t0 < 1.5
        await shop.close()
    asyncio.run(main())
    FakeOMS.mode = "ok"


def test_an_unreachable_oms_is_unavailable_at_once():
    async def main():
        shop = HttpAdapter(config(f"http://127.0.0.1:{free_port()}/api"))
        with pytest.raises(CommerceUnavailable, match="cannot reach"):
            await shop.orders_of("c1")
        await shop.close()
    asyncio.run(main())


def test_the_rest_api_goes_through_the_merchants_http_adapter(redis_url, prefix, oms):
    async def main():
        FakeOMS.mode = "ok"
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            status, _ = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"],
                                       json={"settings": {"commerce": {"adapter": "http", "http": config(oms)}}})
            assert status == 200
            _, one = await api.call("GET", "/api/v1/commerce/customers/c1/orders/YZ8801", a.tokens["agent"])
            assert one["tracking"]["tracking_no"] == "ZT7766"
            status, _ = await api.call("GET", "/api/v1/commerce/customers/c1/orders/YZ9999", a.tokens["agent"])
            assert status == 404
            FakeOMS.mode = "slow"
            t0 = time.monotonic()
            status, answer = await api.call("GET", "/api/v1/commerce/customers/c1/orders/YZ7777", a.tokens["agent"])
            assert status == 503 and answer["error"] == "unavailable" and time.monotonic() - t0 < 1.5
            FakeOMS.mode = "ok"
            status, answer = await api.call("PATCH", "/api/v1/merchant", a.tokens["owner"],
                                            json={"settings": {"commerce": {"adapter": "http"}}})
            assert status == 422 and "http" in json.dumps(answer)
    run(main())
