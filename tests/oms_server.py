"""A local HTTP server playing a merchant's OMS/WMS for end-to-end tests: nested, Taobao-like
payloads (trades with buyer, payment, lines; logistics traces from the carrier, newest first),
bearer auth, and switchable faults — `slow` (answers after 3 s), `down` (502). The mapping in
`SETTINGS` is what a merchant writes in `settings.commerce` to connect it."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

TRADES = {
    "E20261111000123": {
        "tid": "E20261111000123", "buyer": {"open_uid": "c1", "nick": "小明"}, "status": "WAIT_BUYER_CONFIRM_GOODS",
        "payment": {"total_fee": "459.00", "currency": "CNY"}, "created": "2026-11-11 00:01:02",
        "orders": [{"num_iid": "rc-5l", "title": "智能电饭煲 5L 家用大容量", "num": 1}]},
    "E20261111000456": {
        "tid": "E20261111000456", "buyer": {"open_uid": "c2", "nick": "小红"}, "status": "WAIT_SELLER_SEND_GOODS",
        "payment": {"total_fee": "299.00", "currency": "CNY"}, "created": "2026-11-11 00:03:09",
        "orders": [{"num_iid": "rc-3l", "title": "智能电饭煲 3L 迷你", "num": 1}]},
}
TRACES = {
    "E20261111000123": {"company_name": "顺丰速运 SF Express", "out_sid": "SF1402298867533", "status": "IN_TRANSIT",
                        "trace_list": [
                            {"status_time": "2026-11-12 21:14:05", "action": "快件已到达【杭州萧山转运中心】", "city": "杭州"},
                            {"status_time": "2026-11-12 09:30:41", "action": "快件已发车，下一站【杭州萧山转运中心】", "city": "宁波"},
                            {"status_time": "2026-11-11 18:02:13", "action": "顺丰速运已收取快件", "city": "宁波"}]},
}
PRODUCTS = {
    "rc-3l": {"num_iid": "rc-3l", "title": "智能电饭煲 3L 迷你", "price": "299.00",
              "props": {"容量 Capacity": "3 L", "功率 Power": "600 W"}},
    "rc-5l": {"num_iid": "rc-5l", "title": "智能电饭煲 5L 家用大容量", "price": "459.00",
              "props": {"容量 Capacity": "5 L", "功率 Power": "860 W", "预约 Timer": "24 h"}},
}
TOKEN = "Bearer oms-secret-token"


def settings(base_url: str, timeout_s: float = 1.0) -> dict:
    return {"adapter": "http", "http": {
        "base_url": base_url, "headers": {"Authorization": TOKEN}, "timeout_s": timeout_s, "cache_s": 0,
        "endpoints": {"search_products": "/items?q={query}", "product": "/items/{product_id}",
                      "orders_of": "/buyers/{customer_id}/trades", "order": "/trades/{order_id}",
                      "tracking": "/trades/{order_id}/logistics"},
        "map": {"products": "items", "orders": "trades",
                "product": {"product_id": "num_iid", "attributes": "props"},
                "order": {"order_id": "tid", "customer_id": "buyer.open_uid", "total": "payment.total_fee",
                          "currency": "payment.currency", "created_at": "created", "items": "orders"},
                "item": {"product_id": "num_iid", "qty": "num"},
                "tracking": {"carrier": "company_name", "tracking_no": "out_sid", "events": "trace_list"},
                "tracking_event": {"at": "status_time", "text": "action"},
                "statuses": {"WAIT_BUYER_CONFIRM_GOODS": "shipped", "WAIT_SELLER_SEND_GOODS": "paid",
                             "TRADE_FINISHED": "completed", "IN_TRANSIT": "in_transit"}}}}


class OMS:
    """`with OMS() as oms:` — `oms.url` is the API's base, `oms.mode` switches faults."""

    def __init__(self):
        self.mode, self.hits = "ok", 0
        oms = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                oms.hits += 1
                if oms.mode == "slow":
                    time.sleep(3)
                if oms.mode == "down":
                    return self._send(502, {"error": "bad gateway"})
                if self.headers.get("Authorization") != TOKEN:
                    return self._send(401, {"error": "unauthorized"})
                status, body = oms.answer(urlparse(self.path))
                self._send(status, body)

            def _send(self, status: int, body: dict) -> None:
                raw = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def answer(self, url) -> tuple[int, dict]:
        parts = [unquote(p) for p in url.path.split("/")[2:]]   # after /api
        if parts[:1] == ["buyers"] and len(parts) == 3:
            return 200, {"trades": [t for t in TRADES.values() if t["buyer"]["open_uid"] == parts[1]]}
        if parts[:1] == ["trades"] and len(parts) == 2 and parts[1] in TRADES:
            return 200, TRADES[parts[1]]
        if parts[:1] == ["trades"] and len(parts) == 3 and parts[1] in TRACES:
            return 200, TRACES[parts[1]]
        if parts == ["items"]:
            q = parse_qs(url.query).get("q", [""])[0].lower()
            return 200, {"items": [p for p in PRODUCTS.values() if q in p["title"].lower()]}
        if parts[:1] == ["items"] and len(parts) == 2 and parts[1] in PRODUCTS:
            return 200, PRODUCTS[parts[1]]
        return 404, {"error": "not found"}

    def __enter__(self) -> "OMS":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
