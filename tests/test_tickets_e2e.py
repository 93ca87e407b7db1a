"""Orders and tickets end to end over real websockets (gateway, hosts, a bot worker on Ray,
Redis, chDB) with a local server playing the merchant's OMS: the bot answers "where is my
parcel" with live tracking; the agent reads the order; a ticket opened from the conversation
goes from after-sales to the warehouse, breaches its (shortened) SLA and escalates to finance;
the customer reads every step in the chat, once, also after reconnecting; every step is an
event in ClickHouse and a signed webhook. Then the OMS goes down and slow: the chat carries on.
The same path in the browser (widget and console) is tests/test_web_tickets.py."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import ray
import trio

from gateway.client import connect
from storage import webhooks
from tests.gateway_cluster import Peakdesk
from tests.oms_server import OMS, settings as oms_settings
from tests.test_bot_ws import agent, group, next_bot_message
from tests.test_routing_ws import online, signed_customer
from tests.test_tickets import _Receiver

pytestmark = pytest.mark.timeout(300)
TICKETS = {"sla": {"urgent": {"resolve_within_s": 600}, "high": {"resolve_within_s": 4, "remind_before_s": 2},
                   "normal": {"resolve_within_s": 600}, "low": {"resolve_within_s": 600}},
           "escalate_to": "finance"}
KB = [{"id": "shipping-time", "question": "多久发货", "alternatives": ["when do you ship"],
       "answer": "付款后48小时内发货。We ship within 48 hours of payment."}]


@pytest.fixture(scope="module")
def oms():
    with OMS() as server:
        yield server


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory, oms):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("tickets"), "pd-test-tickets", "tk:", bot_workers=1)
    p.post("/api/v1/kb/import?mode=replace", KB, p.owner_token)
    p.request("PATCH", "/api/v1/merchant", {"settings": {"commerce": oms_settings(oms.url), "tickets": TICKETS}},
              p.owner_token)
    yield p
    p.stop()


def clickhouse(pd: Peakdesk, sql: str, params: dict, until, timeout: float = 30):
    writer = next(iter(pd.cluster.writers.values()))
    deadline = time.monotonic() + timeout
    while True:
        rows = ray.get(writer.query.remote(sql, params))
        if until(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


async def notice(client, session: str, timeout: float = 15) -> dict:
    with trio.fail_after(timeout):
        while True:
            frame = await client.next_message(session, timeout=timeout)
            if (frame.get("from") or {}).get("id") == "tickets":
                return frame


def test_an_order_question_becomes_a_ticket_that_escalates_while_the_customer_watches(pd, oms):
    g = group(pd)
    agent_id, agent_token = agent(pd, g)
    receiver = _Receiver()
    hook = pd.post("/api/v1/webhooks", {"url": receiver.url, "events": ["ticket.created", "ticket.updated"]},
                   pd.owner_token)
    customer = signed_customer(pd, "c1", {"name": "小明"})
    try:
        async def main():
            async with connect(pd.url, customer) as c, connect(pd.url, agent_token) as a:
                await online(a)
                session = await c.open(group=g)
                await next_bot_message(c, session)                      # the welcome
                await c.send_message(session, "text", {"text": "我的快递到哪了？"})
                answer = await next_bot_message(c, session)
                text = answer["content"]["text"]
                assert "E20261111000123" in text and "顺丰" in text and "杭州萧山转运中心" in text, text
                assert "E20261111000123" in answer["content"]["cards"][0]["title"]
                await c.send_message(session, "text", {"text": "转人工"})
                await a.until("assigned", session=session, timeout=20)
                await a.subscribe(session)
                # the agent's side panel: the customer's orders and the parcel's tracking, live from the OMS
                orders = pd.request("GET", "/api/v1/commerce/customers/c1/orders", None, agent_token)["items"]
                assert [o["order_id"] for o in orders] == ["E20261111000123"]   # c2's trade never shows
                one = pd.request("GET", "/api/v1/commerce/customers/c1/orders/E20261111000123", None, agent_token)
                assert one["tracking"]["events"][0]["text"] == "快件已到达【杭州萧山转运中心】"

                ticket = pd.post("/api/v1/tickets", {
                    "title": "内胆破损 Cracked inner pot", "department": "after_sales", "priority": "high",
                    "session_id": session, "order_id": "E20261111000123", "type": "质量问题 Quality"}, agent_token)
                assert ticket["customer_id"] == "c1" and ticket["number"] == "T000001"
                opened = await notice(c, session)
                assert "T000001" in opened["content"]["text"] and opened["content"]["ticket"]["status"] == "new"
                tid = ticket["ticket_id"]
                pd.request("PATCH", f"/api/v1/tickets/{tid}", {"status": "in_progress"}, agent_token)
                assert "处理中" in (await notice(c, session))["content"]["text"]
                pd.request("PATCH", f"/api/v1/tickets/{tid}", {"department": "warehouse"}, agent_token)
                assert "仓储" in (await notice(c, session))["content"]["text"]
                # nobody resolves it in time: reminded, then escalated to finance, and the customer is told
                escalated = await notice(c, session, timeout=20)
                assert "加急" in escalated["content"]["text"]
                assert escalated["content"]["ticket"]["department"] == "finance"
                after = pd.request("GET", f"/api/v1/tickets/{tid}", None, agent_token)
                assert (after["escalated"], after["priority"], after["department"]) == (True, "urgent", "finance")
                assert after["sla"]["reminded"] < after["sla"]["breached"]
                transcript = pd.request("GET", f"/api/v1/tickets/{tid}/transcript", None, agent_token)["items"]
                assert any("我的快递到哪了" in (m["content"].get("text") or "") for m in transcript)
                return session, tid

        session, tid = trio.run(main)

        async def again():   # a reconnecting customer reads each notice once, in order
            async with connect(pd.url, customer) as c:
                await c.subscribe(session, after=0)
                texts = []
                with trio.move_on_after(3):
                    while True:
                        frame = await c.next_message(session, timeout=3)
                        if (frame.get("from") or {}).get("id") == "tickets":
                            texts.append(frame["content"]["text"])
                return texts
        texts = trio.run(again)
        assert len(texts) == 4 and len(set(texts)) == 4 and "加急" in texts[-1]

        rows = clickhouse(pd, "SELECT type, group_id FROM events WHERE merchant_id = 'demo' AND session_id = {s:String}"
                              " AND type LIKE 'ticket.%' ORDER BY seq", {"s": session},
                          lambda r: len(r) >= 5)
        assert [r[0] for r in rows] == ["ticket.created", "ticket.updated", "ticket.updated", "ticket.sla_reminder",
                                        "ticket.escalated"]
        assert rows[-1][1] == "finance"
        # who read the conversation is on the audit trail: the agent opening it, the ticket's transcript
        viewed = clickhouse(pd, "SELECT JSONExtractString(payload, 'actor'), JSONExtractString(payload, 'changes', 'via')"
                                " FROM events WHERE merchant_id = 'demo' AND session_id = {s:String}"
                                " AND type = 'audit.conversation.viewed' ORDER BY ts", {"s": session},
                            lambda r: len(r) >= 2)
        assert viewed[0][0] == f"agent:{agent_id}" and viewed[-1] == (f"agent:{agent_id}", "ticket T000001")
        # a week on, the live log has expired: the ticket's conversation comes from ClickHouse
        import redis as sync_redis
        r = sync_redis.Redis.from_url(pd.settings.redis_url)
        assert r.delete(f"tk:m:demo:log:session:{session}") == 1
        r.close()
        transcript = pd.request("GET", f"/api/v1/tickets/{tid}/transcript", None, pd.owner_token)["items"]
        texts_then = [m["content"].get("text", "") for m in transcript]
        assert any("我的快递到哪了" in x for x in texts_then) and sum("【工单" in x for x in texts_then) == 4
        deadline = time.monotonic() + 15
        while len(receiver.got) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        kinds = [json.loads(body)["data"]["change"] for _, body in receiver.got]
        assert kinds == ["created", "updated", "updated", "sla_reminder", "escalated"]
        assert all(webhooks.verify(hook["secret"], h["x-peakdesk-signature"], body) for h, body in receiver.got)
    finally:
        receiver.close()


def test_the_merchants_system_down_or_slow_never_stops_the_chat(pd, oms):
    g = group(pd)
    _, agent_token = agent(pd, g)
    customer_id = f"c-{uuid.uuid4().hex[:6]}"
    customer = signed_customer(pd, customer_id, {})
    try:
        for mode in ("down", "slow"):
            oms.mode = mode
            started = time.monotonic()
            status = _status(pd, "/api/v1/commerce/customers/c1/orders", agent_token)
            assert status == (503, "unavailable") and time.monotonic() - started < 2.5, (mode, status)

        async def main():
            oms.mode = "slow"
            async with connect(pd.url, customer) as c, connect(pd.url, agent_token) as a:
                await online(a)
                session = await c.open(group=g)
                await next_bot_message(c, session)
                started = time.monotonic()
                await c.send_message(session, "text", {"text": "我的快递到哪了"})   # the bot can't look: a person takes over
                await a.until("assigned", session=session, timeout=20)
                assert time.monotonic() - started < 8
                await a.subscribe(session)
                for i in range(5):   # meanwhile, messages flow both ways at chat speed
                    sent = time.monotonic()
                    await c.send_message(session, "text", {"text": f"在吗 {i}"})
                    got = await a.next_message(session)
                    while got["content"].get("text") != f"在吗 {i}":
                        got = await a.next_message(session)
                    assert time.monotonic() - sent < 1.0
                    await a.send_message(session, "text", {"text": f"在的 {i}"})
        trio.run(main)
        rows = clickhouse(pd, "SELECT payload FROM events WHERE merchant_id = 'demo' AND type = 'bot.handoff'"
                              " AND customer_id = {c:String}", {"c": customer_id},
                          lambda r: len(r) >= 1)
        assert json.loads(rows[0][0])["reason"] == "order_system_unavailable"
    finally:
        oms.mode = "ok"


def _status(pd: Peakdesk, path: str, token: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{pd.port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]

