"""A bot worker against real Redis, and the optional LLM through a real local HTTP server that
speaks the OpenAI chat-completions API: grounded phrasing when a merchant turns it on, the plain
retrieved answer on any timeout or error, rebuilt indexes when the knowledge base changes, and
no knowledge crossing merchants."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from actors.bot.worker import BotWorker
from actors.settings import ConfigError, Settings
from storage.knowledge import KnowledgeStore
from storage.records import RecordStore

KB = json.loads((Path(__file__).parent / "data" / "bot" / "kb.json").read_text())
REFUND = next(e for e in KB if e["id"] == "refund-time")


class FakeLLM(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeLLM.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if FakeLLM.mode == "slow":
            time.sleep(2)
        if FakeLLM.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        content = {"ok": "亲，退款原路返回，支付宝/微信24小时内到账。", "refuse": "NO_ANSWER",
                   "slow": "too late"}[FakeLLM.mode]
        raw = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def llm_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def worker(redis_server, llm_server, tmp_path_factory):
    prefix = "bw:"

    async def setup():
        r = aioredis.from_url(redis_server.url)
        records = RecordStore(r, prefix)
        await records.create_merchant("shop", "Shop", {"bot": {"llm": True}}, actor="test")
        await records.create_merchant("plain", "Plain", {"bot": {"keyword_replies": [
            {"keywords": ["地址", "address"], "reply": "我们在上海市浦东新区 Pudong, Shanghai"}]}}, actor="test")
        await records.create_merchant("other", "Other", {}, actor="test")
        kb = KnowledgeStore(r, prefix)
        await kb.import_entries("shop", KB, replace=True, actor="test")
        await kb.import_entries("plain", KB, replace=True, actor="test")
        await r.aclose()
    asyncio.run(setup())
    settings = Settings(data_dir=tmp_path_factory.mktemp("bw"), redis_url=redis_server.url, prefix=prefix,
                        llm_url=llm_server, llm_model="qwen-test", llm_api_key="sk-test", llm_timeout_s=0.5)
    return BotWorker("bot-test", settings.to_dict())


def ask(worker, merchant: str, text: str) -> dict:
    (answer,) = worker.handle([{"actor": f"session:{merchant}:s1", "req": 7, "mode": "answer", "text": text}])
    assert answer["actor"] == f"session:{merchant}:s1" and answer["type"] == "bot_reply"
    return answer["body"]


def test_the_llm_phrases_a_grounded_answer_when_the_merchant_turns_it_on(worker):
    FakeLLM.mode, FakeLLM.seen = "ok", []
    body = ask(worker, "shop", "退款一般多久能到账")
    assert body["action"] == "answer" and body["entry_id"] == "refund-time" and body["reason"] == "match_llm"
    assert body["text"] == "亲，退款原路返回，支付宝/微信24小时内到账。"
    (call,) = FakeLLM.seen
    assert call["path"] == "/v1/chat/completions" and call["auth"] == "Bearer sk-test"
    assert call["body"]["model"] == "qwen-test"
    assert REFUND["answer"] in call["body"]["messages"][1]["content"]  # grounded in the retrieved entry
    plain = ask(worker, "plain", "退款一般多久能到账")  # a merchant without llm: the entry's own answer
    assert plain["text"] == REFUND["answer"] and len(FakeLLM.seen) == 1


@pytest.mark.parametrize("mode", ["slow", "error", "refuse"])
def test_any_llm_failure_falls_back_to_the_retrieved_answer_within_the_timeout(worker, mode):
    FakeLLM.mode = mode
    t0 = time.monotonic()
    body = ask(worker, "shop", "退款一般多久能到账")
    assert body["text"] == REFUND["answer"] and body["reason"] == "match"
    assert time.monotonic() - t0 < 1.5  # the 0.5 s timeout, not the server's 2 s


def test_a_changed_knowledge_base_is_picked_up_and_merchants_never_share_one(worker, redis_server):
    FakeLLM.mode = "ok"
    entry = {"id": "gift-card", "question": "礼品卡怎么使用", "answer": "结算页输入礼品卡卡号即可抵扣。",
             "alternatives": ["how do I redeem a gift card", "礼品卡在哪里输入"]}

    async def add():
        r = aioredis.from_url(redis_server.url)
        await KnowledgeStore(r, "bw:").put("plain", entry, actor="test")
        await r.aclose()
    asyncio.run(add())
    body = ask(worker, "plain", "礼品卡怎么用啊")
    assert body["action"] == "answer" and body["entry_id"] == "gift-card"
    other = ask(worker, "other", "退款一般多久能到账")  # no knowledge base of its own: a person
    assert other["action"] == "handoff" and other["reason"] == "no_match"


def test_keyword_rules_greetings_and_a_request_for_a_person(worker):
    body = ask(worker, "plain", "你们店铺地址在哪")
    assert (body["action"], body["reason"], body["text"]) == ("reply", "keyword", "我们在上海市浦东新区 Pudong, Shanghai")
    body = ask(worker, "plain", "你好")
    assert (body["action"], body["reason"]) == ("reply", "greeting")
    body = ask(worker, "plain", "I want to talk to a real person")
    assert (body["action"], body["reason"], body["lang"]) == ("handoff", "asked_for_human", "en")


def test_the_llm_settings_are_checked_by_name(tmp_path):
    with pytest.raises(ConfigError, match="llm_url"):
        Settings(data_dir=tmp_path, llm_url="ftp://x", llm_model="m")
    with pytest.raises(ConfigError, match="llm_model"):
        Settings(data_dir=tmp_path, llm_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="llm_timeout_s"):
        Settings(data_dir=tmp_path, llm_timeout_s=0)


def test_where_is_my_order_is_answered_live_and_only_with_the_customers_own_orders(worker, redis_server):
    from storage.commerce import Order
    from storage.commerce.builtin import BuiltinStore

    order = {"order_id": "TB20261111001", "customer_id": "c1", "status": "shipped", "created_at": "2026-11-11T00:05:00+08:00",
             "items": [{"title": "电饭煲 3L", "qty": 1}],
             "tracking": {"order_id": "TB20261111001", "carrier": "顺丰速运", "tracking_no": "SF1234567890",
                          "events": [{"at": "2026-11-12 08:00", "text": "运输中", "location": "杭州"}]}}

    async def fill():
        r = aioredis.from_url(redis_server.url)
        store = BuiltinStore(r, "bw:", "plain")
        await store.save_order(Order.model_validate(order))
        await store.save_order(Order.model_validate({**order, "order_id": "TB20261111002", "customer_id": "c2"}))
        await r.aclose()
    asyncio.run(fill())

    def ask_as(customer: str, text: str, context=()) -> dict:
        (answer,) = worker.handle([{"actor": "session:plain:s9", "req": 1, "mode": "answer", "text": text,
                                    "customer_id": customer, "context": list(context)}])
        return answer["body"]

    live = ask_as("c1", "我的快递到哪了")
    assert (live["action"], live["reason"], live["order_id"]) == ("reply", "order_status", "TB20261111001")
    assert "已发货" in live["text"] and "SF1234567890" in live["text"] and "杭州" in live["text"]
    assert live["cards"][0]["title"] == "订单 TB20261111001"
    english = ask_as("c1", "where is my order?")
    assert "shipped" in english["text"] and english["lang"] == "en"
    # another customer's order number: not found, nothing of it shown
    theirs = ask_as("c1", "订单 TB20261111002 到哪了")
    assert theirs["reason"] == "order_not_found" and "运输中" not in theirs["text"]
    # a customer with no orders is asked for the number; the number then answers
    assert ask_as("c3", "我的包裹什么时候到")["reason"] == "order_number_needed"
    assert ask_as("c1", "TB20261111001", context=["我的包裹什么时候到"])["reason"] == "order_status"
    # a complaint or a request for a person about an order goes to a person, not to the tracking
    for text in ("投诉！快递到哪了", "转人工，我的快递到底到哪了"):
        assert ask_as("c1", text)["action"] == "handoff", text
    # a question that is not about an order: the knowledge base answers as before
    assert ask_as("c1", "退款一般多久能到账")["action"] == "answer"


def test_one_merchants_slow_order_system_holds_up_nobody_else_in_the_batch(worker, redis_server):
    from storage.commerce import Order
    from storage.commerce.builtin import BuiltinStore
    from tests.oms_server import OMS, settings as oms_settings

    with OMS() as oms:
        oms.mode = "slow"   # answers after 3 s; the merchant's timeout is 1 s

        async def setup():
            r = aioredis.from_url(redis_server.url)
            await RecordStore(r, "bw:").create_merchant("slowshop", "Slow", {"commerce": oms_settings(oms.url, 1.0)},
                                                        actor="test")
            await BuiltinStore(r, "bw:", "plain").save_order(Order.model_validate(
                {"order_id": "TB20261111009", "customer_id": "c9", "status": "paid", "items": [{"title": "耳机"}]}))
            await r.aclose()
        asyncio.run(setup())
        batch = [{"actor": f"session:slowshop:s{i}", "req": i, "mode": "answer", "text": "我的快递到哪了",
                  "customer_id": "c1"} for i in range(3)]
        batch += [{"actor": "session:plain:s8", "req": 8, "mode": "answer", "text": "快递到哪了", "customer_id": "c9"},
                  {"actor": "session:plain:s9", "req": 9, "mode": "answer", "text": "退款一般多久能到账"}]
        started = time.monotonic()
        answers = [a["body"] for a in worker.handle(batch)]
        took = time.monotonic() - started
    assert [a["reason"] for a in answers[:3]] == ["order_system_unavailable"] * 3
    assert answers[3]["reason"] == "order_status" and "TB20261111009" in answers[3]["text"]
    assert answers[4]["entry_id"] == "refund-time"
    assert took < 2.5, took      # the lookups ran at once: one timeout, not three
