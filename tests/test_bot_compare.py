"""The bot comparing two products (actors/bot/compare.py): the question read in Chinese and
English, each mention resolved against the merchant's catalogue — the built-in store in real
Redis, and the HTTP adapter against a local server playing a merchant's shop API — the table as
text, cards and a `comparison`; unclear mentions answered with choices of pairs; nothing in the
catalogue left to the knowledge base; a shop system down or slow handed to a person within its
timeout; one merchant's catalogue never shown to another. End to end over websockets and Ray last."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from actors.bot import compare
from actors.bot.worker import BotWorker
from actors.settings import Settings
from storage.commerce import Product
from storage.commerce.builtin import BuiltinStore
from storage.knowledge import KnowledgeStore
from storage.records import RecordStore
from storage.redis_server import free_port

DATA = Path(__file__).parent / "data" / "bot"
KB = json.loads((DATA / "kb.json").read_text())
CATALOGUE = [
    {"product_id": "rc-3l", "title": "Lumo 智能电饭煲 Rice cooker 3L", "price": "299.00", "category": "电饭煲 Rice cookers",
     "attributes": {"容量 Capacity": "3 L", "功率 Power": "600 W", "内胆 Inner pot": "陶瓷 Ceramic"},
     "url": "https://shop.example.com/rc-3l"},
    {"product_id": "rc-5l", "title": "Lumo 智能电饭煲 Rice cooker 5L", "price": "459.00", "category": "电饭煲 Rice cookers",
     "attributes": {"容量 Capacity": "5 L", "功率 Power": "860 W", "预约 Timer": "24 h"}},
    {"product_id": "kt-17", "title": "Lumo 电热水壶 Kettle 1.7L", "price": "129.00", "category": "水壶 Kettles",
     "attributes": {"容量 Capacity": "1.7 L", "功率 Power": "1800 W"}},
    {"product_id": "af-5l", "title": "Lumo 空气炸锅 Air fryer 5L", "price": "399.00", "category": "空气炸锅 Air fryers",
     "attributes": {"容量 Capacity": "5 L", "功率 Power": "1500 W"}},
    {"product_id": "eb-pro", "title": "Lumo 降噪耳机 Earbuds Pro", "price": "599.00", "category": "耳机 Earbuds",
     "attributes": {"降噪 ANC": "有 Yes"}},
    {"product_id": "eb-lite", "title": "Lumo 耳机 Earbuds Lite", "price": "199.00", "category": "耳机 Earbuds",
     "attributes": {"降噪 ANC": "无 No"}},
]
PRODUCTS = [Product.model_validate(p) for p in CATALOGUE]
OTHER = [{"product_id": f"zz-{size}", "title": f"Other 电饭煲 Rice cooker {size.upper()}", "price": price,
          "category": "电饭煲 Rice cookers"} for size, price in (("3l", "99.00"), ("5l", "199.00"))]


# -- reading the question (pure) ---------------------------------------------------------------
@pytest.mark.parametrize("text, pair", [
    ("A和B哪个好", ("A", "B")),
    ("3L和5L电饭煲有什么区别", ("3L", "5L电饭煲")),
    ("A跟B比哪个更适合三口之家", ("A", "B")),
    ("3L的和5L的有什么区别？", ("3L", "5L")),
    ("买3L还是5L好", ("3L", "5L")),
    ("3L的跟5L的比，哪个更省电", ("3L", "5L")),
    ("对比一下rc-3l和rc-5l", ("rc-3l", "rc-5l")),
    ("which is better, A or B", ("A", "B")),
    ("compare the 3L and the 5L rice cooker", ("3L", "5L rice cooker")),
    ("which one is better: the 3L or the 5 litre one?", ("3L", "5 litre")),
    ("What is the difference between the 3L and 5L rice cooker?", ("3L", "5L rice cooker")),
    ("RC-3L vs RC-5L", ("RC-3L", "RC-5L")),
    ("Is the 3L better than the 5L?", ("3L", "5L")),
    ("Earbuds Pro or Earbuds Lite, which is better?", ("Earbuds Pro", "Earbuds Lite")),
    ("should I buy the 3L or the 5L?", ("3L", "5L")),
])
def test_a_comparison_question_names_two_products(text, pair):
    assert compare.mentions(text) == pair and compare.asks_to_compare(text)


@pytest.mark.parametrize("text", ["退款一般多久能到账", "这个和那个哪个好", "Which rice cooker size should I get?",
                                  "付款三天了还是待发货 怎么回事", "do u refund the price difference if it goes on sale"])
def test_questions_that_name_no_two_products_are_not_comparisons(text):
    assert not compare.asks_to_compare(text)


def test_a_person_asked_for_or_needed_wins_over_a_comparison():
    assert compare.mentions("转人工 3L和5L哪个好") and not compare.asks_to_compare("转人工 3L和5L哪个好")
    assert not compare.asks_to_compare("3L和5L哪个好 不然我就投诉")


def test_no_question_of_the_development_sets_reads_as_a_comparison():
    for path in (DATA / "queries.jsonl", DATA.parent / "bot_heldout" / "queries.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert [q["query"] for q in lines if compare.asks_to_compare(q["query"])] == []


def test_a_mention_fits_by_specs_however_written_and_by_words():
    rc3, rc5, kettle, fryer = PRODUCTS[:4]
    assert compare.fit("3L", rc3) > 0 and compare.fit("3L", rc5) == 0        # 3L is never the 5L
    assert compare.fit("5 litre", rc5) == compare.fit("5升", rc5) == compare.fit("5L", rc5) > 0
    assert compare.fit("5L电饭煲", rc5) == 1.0 and compare.fit("5L电饭煲", fryer) < compare.CANDIDATE
    assert compare.fit("rc-3l", rc3) == 1.0 and compare.fit("1.7升", kettle) > 0
    assert compare.resolve("5L", PRODUCTS)[0] is None                          # the cooker or the fryer: unsure
    chosen, _ = compare.resolve("5L", PRODUCTS, frozenset(compare._terms("电饭煲")[1]))
    assert chosen.product_id == "rc-5l"                                        # the other mention's words decide
    assert compare.resolve("退货", PRODUCTS) == (None, [])


def test_a_choice_names_the_pair_and_fits_the_protocol():
    cid = compare.choice_id("zh", PRODUCTS[0], PRODUCTS[1])
    assert compare.is_choice(cid) and compare._pair_of(cid) == ("zh", "rc-3l", "rc-5l")
    assert not compare.is_choice("refund-time") and compare._pair_of("compare|zh|rc-3l") is None
    long = Product(product_id="x" * 60, title="long")
    assert compare._pairs([PRODUCTS[0]], [long, PRODUCTS[1]], True) == [(PRODUCTS[0], PRODUCTS[1])]


def test_the_table_is_text_cards_and_rows():
    reply = compare.table(PRODUCTS[0], PRODUCTS[1], zh=True)
    rows = {r["name"]: (r["a"], r["b"]) for r in reply["comparison"]["rows"]}
    assert rows["价格 Price"] == ("299.00 CNY", "459.00 CNY") and rows["预约 Timer"] == ("—", "24 h")
    assert [c["product_id"] for c in reply["cards"]] == ["rc-3l", "rc-5l"] == reply["product_ids"]
    assert reply["cards"][0]["url"] == "https://shop.example.com/rc-3l" and reply["cards"][1]["url"] is None
    assert "容量 Capacity：3 L ｜ 5 L" in reply["text"] and reply["text"].startswith("为您对比")
    english = compare.table(PRODUCTS[4], PRODUCTS[5], zh=False)
    assert "They differ in: 价格 Price, 降噪 ANC." in english["text"] and english["lang"] == "en"


# -- a bot worker, the built-in store in real Redis --------------------------------------------
class FakeShop(BaseHTTPRequestHandler):
    """A merchant's shop API: its own field names, a search and a product endpoint."""
    mode = "ok"

    def do_GET(self):  # noqa: N802 (http.server's name)
        if FakeShop.mode == "slow":   # longer than the adapter's timeout: nobody waits for an answer
            time.sleep(2)
            return
        if FakeShop.mode == "error":
            self.send_response(502)
            self.end_headers()
            return
        url = urllib.parse.urlparse(self.path)
        items = [{"sku": p["product_id"], "name": p["title"], "price": {"amount": float(p["price"])},
                  "cat": p["category"], "specs": p.get("attributes", {})} for p in CATALOGUE]
        if url.path == "/api/items/search":
            q = urllib.parse.parse_qs(url.query).get("keyword", [""])[0].lower()
            body = {"data": {"items": [i for i in items if q in f"{i['name']} {i['cat']}".lower()]}}
        elif url.path.startswith("/api/items/") and any(url.path.endswith("/" + i["sku"]) for i in items):
            body = next(i for i in items if url.path.endswith("/" + i["sku"]))
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


class ShopServer(ThreadingHTTPServer):
    request_queue_size = 64   # the bot's searches arrive together; http.server's backlog of 5 drops some


@pytest.fixture(scope="module")
def shop_api():
    server = ShopServer(("127.0.0.1", 0), FakeShop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def http_settings(base: str, search: bool = True) -> dict:
    endpoints = {"product": "/items/{product_id}"}
    if search:
        endpoints["search_products"] = "/items/search?keyword={query}"
    return {"commerce": {"adapter": "http", "http": {
        "base_url": base, "timeout_s": 0.5, "cache_s": 0, "endpoints": endpoints,
        "map": {"products": "data.items", "product": {"product_id": "sku", "title": "name", "price": "price.amount",
                                                      "category": "cat", "attributes": "specs"}}}}}


@pytest.fixture(scope="module")
def worker(redis_server, shop_api, tmp_path_factory):
    prefix = "bc:"

    async def setup():
        r = aioredis.from_url(redis_server.url)
        records, kb = RecordStore(r, prefix), KnowledgeStore(r, prefix)
        merchants = {"shop": {}, "kbonly": {}, "other": {}, "oms": http_settings(shop_api),
                     "oms-orders": http_settings(shop_api, search=False),
                     "oms-gone": http_settings(f"http://127.0.0.1:{free_port()}/api")}
        for merchant, settings in merchants.items():
            await records.create_merchant(merchant, merchant, settings, actor="test")
            await kb.import_entries(merchant, KB, replace=True, actor="test")
        await BuiltinStore(r, prefix, "shop").save_products(PRODUCTS)
        await BuiltinStore(r, prefix, "other").save_products([Product.model_validate(p) for p in OTHER])
        await r.aclose()
    asyncio.run(setup())
    settings = Settings(data_dir=tmp_path_factory.mktemp("bc"), redis_url=redis_server.url, prefix=prefix)
    return BotWorker("bot-compare", settings.to_dict())


def ask(worker, merchant: str, text: str, choice: str | None = None) -> dict:
    (answer,) = worker.handle([{"actor": f"session:{merchant}:s1", "req": 3, "mode": "answer", "text": text,
                                "choice": choice, "customer_id": "c1"}])
    assert "failed" not in answer["body"], answer
    return answer["body"]


@pytest.mark.parametrize("text, lang", [("3L和5L电饭煲有什么区别", "zh"), ("3L跟5L比哪个更适合三口之家", "zh"),
                                        ("compare the 3L and the 5L rice cooker", "en"),
                                        ("which is better, the 3L or the 5 litre one?", "en")])
def test_two_products_are_compared_from_the_merchants_own_catalogue(worker, text, lang):
    body = ask(worker, "shop", text)
    assert (body["action"], body["reason"], body["lang"]) == ("reply", "product_comparison", lang)
    assert body["product_ids"] == ["rc-3l", "rc-5l"] and [c["type"] for c in body["cards"]] == ["product", "product"]
    assert {"name": "容量 Capacity", "a": "3 L", "b": "5 L"} in body["comparison"]["rows"]
    assert "3 L ｜ 5 L" in body["text"] and ("主要区别" in body["text"]) == (lang == "zh")


def test_unclear_mentions_are_offered_as_pairs_and_a_pick_is_compared(worker):
    body = ask(worker, "shop", "电饭煲和耳机哪个好")
    assert (body["action"], body["reason"]) == ("choices", "comparison_unclear")
    ids = [c["id"] for c in body["candidates"]]
    assert "compare|zh|rc-3l|eb-pro" in ids and len(ids) == 4 and all(len(i) <= 64 for i in ids)
    pick = body["candidates"][0]
    body = ask(worker, "shop", pick["question"], choice=pick["id"])
    assert body["reason"] == "product_comparison" and body["product_ids"] == pick["id"].split("|")[2:]


def test_the_same_product_twice_asks_which_other_one(worker):
    body = ask(worker, "shop", "rc-3l和Lumo 3L电饭煲哪个好")
    assert (body["action"], body["reason"]) == ("choices", "comparison_same_product")
    assert [c["id"] for c in body["candidates"]] == ["compare|zh|rc-3l|rc-5l"] and "都是" in body["text"]


def test_one_product_found_asks_for_the_other(worker):
    body = ask(worker, "shop", "Which is better, the Earbuds Pro or the Zeppelin?")
    assert (body["action"], body["reason"], body["lang"]) == ("choices", "comparison_unclear", "en")
    assert [c["id"] for c in body["candidates"]] == ["compare|en|eb-pro|eb-lite"]
    body = ask(worker, "shop", "rc-3l和火星车哪个好")   # the other cookers are offered
    assert [c["id"] for c in body["candidates"]] == ["compare|zh|rc-3l|rc-5l"]
    body = ask(worker, "shop", "kt-17和火星车哪个好")   # the only kettle: asked, nothing offered
    assert (body["action"], body["reason"]) == ("reply", "comparison_unclear") and "Kettle 1.7L" in body["text"]
    assert "请告诉我商品名称或编号" in body["text"]


def test_nothing_in_the_catalogue_or_no_catalogue_leaves_it_to_the_knowledge_base(worker):
    for merchant, text in (("shop", "退货和换货有什么区别"), ("kbonly", "3L和5L电饭煲有什么区别"),
                           ("oms-orders", "3L和5L电饭煲有什么区别")):
        body = ask(worker, merchant, text)
        assert body["reason"] not in ("product_comparison", "comparison_unclear", "product_system_unavailable")
        assert "cards" not in body or not any(c.get("type") == "product" for c in body["cards"])


def test_a_merchant_sees_only_its_own_catalogue(worker):
    body = ask(worker, "other", "3L和5L电饭煲有什么区别")
    assert body["product_ids"] == ["zz-3l", "zz-5l"] and "Lumo" not in json.dumps(body, ensure_ascii=False)
    stale = ask(worker, "other", "Lumo", choice="compare|zh|rc-3l|rc-5l")   # another merchant's ids: unknown here
    assert "Lumo" not in json.dumps(stale, ensure_ascii=False) and stale["reason"] != "product_comparison"


def test_asking_for_a_person_is_still_handed_over(worker):
    body = ask(worker, "shop", "3L和5L哪个好 转人工")
    assert (body["action"], body["reason"]) == ("handoff", "asked_for_human")


# -- the HTTP adapter ----------------------------------------------------------------------------
def test_the_http_adapter_compares_from_the_merchants_shop_api(worker):
    FakeShop.mode = "ok"
    body = ask(worker, "oms", "Earbuds Pro or Earbuds Lite, which is better?")
    assert (body["reason"], body["product_ids"]) == ("product_comparison", ["eb-pro", "eb-lite"])
    assert {"name": "价格 Price", "a": "599.00 CNY", "b": "199.00 CNY"} in body["comparison"]["rows"]
    body = ask(worker, "oms", "rc-3l和rc-5l有什么不同")   # ids looked up through the product endpoint
    assert body["product_ids"] == ["rc-3l", "rc-5l"]


@pytest.mark.parametrize("merchant, mode", [("oms", "slow"), ("oms", "error"), ("oms-gone", "ok")])
def test_a_shop_system_down_or_slow_hands_over_within_its_timeout(worker, merchant, mode):
    FakeShop.mode = mode
    try:
        t0 = time.monotonic()
        body = ask(worker, merchant, "3L和5L电饭煲有什么区别")
        assert time.monotonic() - t0 < 1.5   # the 0.5 s timeout, not the shop's 2 s
        assert (body["action"], body["reason"], body["lang"]) == ("handoff", "product_system_unavailable", "zh")
        choice = ask(worker, merchant, "x", choice="compare|en|rc-3l|rc-5l")
        assert (choice["reason"], choice["lang"]) == ("product_system_unavailable", "en")
    finally:
        FakeShop.mode = "ok"


# -- end to end: websockets, hosts, a bot worker on Ray ------------------------------------------
@pytest.mark.timeout(300)
def test_a_customer_gets_the_table_over_the_websocket(ray_session, redis_server, tmp_path_factory):
    import trio

    from gateway.client import connect
    from tests.gateway_cluster import Peakdesk
    from tests.test_bot_ws import next_bot_message

    pd = Peakdesk(redis_server.url, tmp_path_factory.mktemp("cmp"), "pd-test-compare", "bcw:", bot_workers=1)
    try:
        pd.post("/api/v1/kb/import?mode=replace", KB, pd.owner_token)
        pd.request("POST", "/api/v1/commerce/products/import", CATALOGUE, pd.owner_token)

        async def main():
            async with connect(pd.url, pd.visitor_token()) as c:
                session = await c.open()
                await next_bot_message(c, session)   # the welcome
                await c.send_message(session, "text", {"text": "电饭煲和耳机哪个好"})
                offered = (await next_bot_message(c, session))["content"]
                pick = offered["choices"][0]
                await c.send_message(session, "text", {"text": pick["question"], "choice": pick["id"]})
                table = (await next_bot_message(c, session))["content"]
                assert table["text"].startswith("为您对比") and "｜" in table["text"]
                assert [card["type"] for card in table["cards"]] == ["product", "product"]
                rows = table["comparison"]["rows"]          # the table itself, for the widget to draw
                assert len(table["comparison"]["products"]) == 2 and rows and {"name", "a", "b"} <= set(rows[0])
                await c.send_message(session, "text", {"text": "退款一般多久能到账"})
                faq = (await next_bot_message(c, session))["content"]
                assert faq["text"] == next(e["answer"] for e in KB if e["id"] == "refund-time")
        trio.run(main)
    finally:
        pd.stop()
